//! The runner's answers to the control socket: `status` (the view as the
//! runner holds it) and the operator modes (`standby`, `takeover`, `auto`).
//! A takeover also clears a failed start, so the policy may try again.

use hadisk_agent::membership::Liveness;
use hadisk_agent::policy::GroupState;
use hadisk_agent::wire::{Mode, MAX_GROUPS};

use super::{Runner, Slot};
use crate::control::{AgentRequest, AgentResponse, AgentStatus, GroupStatus, ResourceView};

impl Runner {
    pub(super) fn answer(&mut self, request: AgentRequest) -> AgentResponse {
        let ok = |message: String| AgentResponse {
            ok: true,
            message,
            status: None,
        };
        match request {
            AgentRequest::Status => AgentResponse {
                ok: true,
                message: String::new(),
                status: Some(self.status()),
            },
            AgentRequest::Standby => {
                self.node.set_mode(Mode::Standby);
                self.heartbeat_due = true;
                tracing::info!("standby requested: the groups go to the peer while it is alive");
                ok(format!(
                    "{}: standby; the groups go to {} while it is alive",
                    self.files_me(),
                    self.node.peer()
                ))
            }
            AgentRequest::Takeover => {
                self.node.set_mode(Mode::Takeover);
                for s in &mut self.slots {
                    if s.state == GroupState::StartFailed {
                        s.state = GroupState::Stopped;
                    }
                }
                self.heartbeat_due = true;
                tracing::info!("takeover requested: the groups come to this node");
                ok(format!(
                    "{}: takeover; the groups come to this node",
                    self.files_me()
                ))
            }
            AgentRequest::Auto => {
                self.node.set_mode(Mode::Auto);
                self.heartbeat_due = true;
                tracing::info!("auto requested: the groups go where the policy says");
                ok(format!("{}: auto", self.files_me()))
            }
        }
    }

    fn files_me(&self) -> String {
        self.files
            .hacf
            .nodes
            .iter()
            .find(|n| !n.eq_ignore_ascii_case(self.node.peer()))
            .cloned()
            .unwrap_or_default()
    }

    fn status(&self) -> AgentStatus {
        let now = self.now_ms();
        let me = self.files_me();
        let heard = self.node.peer_heard();
        let peer_alive = self.last.as_ref().is_some_and(|d| d.peer.is_alive());
        let groups = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let peer_holds = peer_alive
                    && heard.is_some_and(|h| i < MAX_GROUPS && h.held & (1u16 << i) != 0);
                let holder = if s.state.held() {
                    me.clone()
                } else if peer_holds {
                    self.node.peer().to_owned()
                } else {
                    "nobody".to_owned()
                };
                group_status(i, s, holder)
            })
            .collect();
        AgentStatus {
            node: me,
            mode: self.node.mode().to_string(),
            peer: self.node.peer().to_owned(),
            peer_liveness: self
                .last
                .as_ref()
                .map(|d| match d.peer {
                    Liveness::Alive => "Alive".to_owned(),
                    Liveness::Late { .. } => "Late".to_owned(),
                    Liveness::Dead { .. } => "Dead".to_owned(),
                    Liveness::Waiting { .. } => "Waiting".to_owned(),
                })
                .unwrap_or_else(|| "Waiting".to_owned()),
            peer_last_heartbeat_age_ms: heard.map(|h| now.saturating_sub(h.last_seen_ms)),
            peer_mode: heard.map(|h| h.mode.to_string()),
            ping: self
                .last
                .as_ref()
                .map(|d| format!("{:?}", d.ping))
                .unwrap_or_else(|| "Waiting".to_owned()),
            rejected_datagrams: self.rejected,
            groups,
        }
    }
}

fn group_status(index: usize, s: &Slot, holder: String) -> GroupStatus {
    GroupStatus {
        index,
        preferred: s.group.node.clone(),
        state: format!("{:?}", s.state),
        holder,
        reason: s.reason.clone(),
        last_failure: s.last_failure.clone(),
        resources: s
            .group
            .resources
            .iter()
            .zip(&s.resources)
            .map(|(r, st)| ResourceView {
                name: r.to_string(),
                state: st.clone(),
            })
            .collect(),
    }
}
