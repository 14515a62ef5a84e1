//! hadisk's failover agent, the executor: everything the pure
//! [`hadisk_agent`] crate leaves out — sockets, clocks, `ip`, `arping`,
//! `mount`, scripts and the daemon — driven by one tokio loop.
//!
//! Why a separate crate (and not `hadisk_agent::exec`): the pure crate stays
//! free of tokio and of every I/O dependency, so its policy tests and
//! property tests build fast and cannot touch the machine.
//!
//! - [`files`]: reads `HA_DIR/ha.cf`, `authkeys` (mode 600 or refused) and
//!   `haresources`, and checks them against each other.
//! - [`transport`]: UDP heartbeat paths (`ucast IFACE IP`, `bcast IFACE`,
//!   each socket bound to its interface) and the receive socket.
//! - [`ping`]: ping nodes through a raw ICMP socket (the agent runs as root;
//!   no `ping` binary is needed, and none is installed on minimal systems).
//! - [`resource`]: the resource types and what start/stop/status do.
//! - [`group`]: one start or stop of a group, step by step, as
//!   [`hadisk_agent::plan`] orders it.
//! - [`control`]: the agent's control socket (`RUN_DIR/agent.sock`) for
//!   `hadisk agent status|standby|takeover`.
//! - [`runner`]: the loop: heartbeats every keepalive, datagrams through the
//!   pure receiver, the policy on every heartbeat and tick, its actions
//!   carried out.
//!
//! Invariants: only the runner's task changes the agent's state (group
//! states, mode); group runs and pollers report to it over channels. At most
//! one run per group is in flight. Every external command has a time limit.

pub mod cmd;
pub mod control;
pub mod files;
pub mod garp;
pub mod group;
pub mod ping;
pub mod resource;
pub mod runner;
pub mod transport;

pub use control::{AgentRequest, AgentResponse, AgentStatus, AGENT_SOCKET};
pub use files::HaFiles;
pub use resource::Replicator;
pub use runner::{run, AgentOptions};
