//! Fixed-newstyle negotiation as a state machine fed bytes.
//!
//! Byte layout (all big-endian):
//! ```text
//! server greeting : NBDMAGIC u64 | IHAVEOPT u64 | handshake flags u16      (18 bytes)
//! client flags    : u32                                                    (4 bytes)
//! client option   : IHAVEOPT u64 | option u32 | length u32 | data[length]
//! option reply    : 0x3e889045565a9 u64 | option u32 | reply type u32 | length u32 | data
//! EXPORT_NAME ok  : size u64 | transmission flags u16 | 124 zeroes unless NO_ZEROES
//! ```
//!
//! Invariants:
//! - [`Negotiation::advance`] consumes either nothing (`Ok(None)`: more bytes
//!   needed) or exactly one complete unit (client flags or one option); the
//!   bytes after it belong to the next unit or, after GO/EXPORT_NAME, to the
//!   transmission phase, so the caller keeps them.
//! - An option's declared length is checked against
//!   [`limits::MAX_OPTION_DATA_BYTES`] before any of its data is waited for.
//! - Unknown options get `NBD_REP_ERR_UNSUP` and negotiation goes on;
//!   STRUCTURED_REPLY is declined the same way (all replies are simple).
//! - ABORT is acknowledged, then the connection closes.

use crate::error::ProtocolError;
use crate::limits;
use crate::wire::*;

/// One export as `NBD_OPT_LIST` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportListing {
    /// Export name.
    pub name: String,
    /// Human-readable description (may be empty).
    pub description: String,
}

/// What the client learns about an export it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportDetails {
    /// Canonical export name.
    pub name: String,
    /// Human-readable description (may be empty).
    pub description: String,
    /// Export size; no request may reach beyond it.
    pub size_bytes: u64,
    /// Transmission flags, see [`crate::transmission_flags`].
    pub transmission_flags: u16,
}

/// Why an export cannot be opened; the message is shown to the user by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such export, or not available now (`NBD_REP_ERR_UNKNOWN`).
    Unknown(String),
    /// Exists but policy forbids it (`NBD_REP_ERR_POLICY`).
    Policy(String),
    /// The server is shutting down (`NBD_REP_ERR_SHUTDOWN`).
    Shutdown(String),
}

impl Refusal {
    fn reply_type_and_message(&self) -> (u32, &str) {
        match self {
            Refusal::Unknown(m) => (REP_ERR_UNKNOWN, m),
            Refusal::Policy(m) => (REP_ERR_POLICY, m),
            Refusal::Shutdown(m) => (REP_ERR_SHUTDOWN, m),
        }
    }
}

/// The server's view of its exports during negotiation (the registry).
pub trait Exports {
    /// What the server keeps for an opened export (e.g. the volume).
    type Handle;
    /// The exports to list.
    fn list(&self) -> Vec<ExportListing>;
    /// Opens an export by name (`""` is the default export).
    fn open(&self, name: &str) -> Result<(ExportDetails, Self::Handle), Refusal>;
}

/// One decoded client option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionRequest {
    /// `NBD_OPT_EXPORT_NAME`: old-style choice; no error reply is possible.
    ExportName {
        /// Requested name.
        name: String,
    },
    /// `NBD_OPT_INFO`.
    Info {
        /// Requested name.
        name: String,
        /// Information items the client asked for.
        info_requests: Vec<u16>,
    },
    /// `NBD_OPT_GO`.
    Go {
        /// Requested name.
        name: String,
        /// Information items the client asked for.
        info_requests: Vec<u16>,
    },
    /// `NBD_OPT_LIST`.
    List,
    /// `NBD_OPT_ABORT`.
    Abort,
    /// A known option whose data is malformed.
    Invalid {
        /// The option code.
        option: u32,
        /// Sent to the client as the error text.
        reason: &'static str,
    },
    /// Any other option, including STRUCTURED_REPLY and STARTTLS.
    Unsupported {
        /// The option code.
        option: u32,
    },
}

/// What the caller does after writing the bytes appended to `out`.
#[derive(Debug)]
pub enum NegotiationStep<H> {
    /// Feed more bytes.
    Continue,
    /// Close the connection (ABORT, or EXPORT_NAME of an unavailable export).
    Close,
    /// Enter the transmission phase with this export.
    Transmission {
        /// What the client was told.
        details: ExportDetails,
        /// What [`Exports::open`] returned.
        handle: H,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ClientFlags,
    Options,
    Finished,
}

/// Result of [`Negotiation::advance`]: `Ok(None)` when more bytes are needed,
/// else the bytes consumed and the next step.
pub type Advance<H> = Result<Option<(usize, NegotiationStep<H>)>, ProtocolError>;

/// The negotiation of one connection.
#[derive(Debug)]
pub struct Negotiation {
    phase: Phase,
    no_zeroes: bool,
}

impl Default for Negotiation {
    fn default() -> Self {
        Self::new()
    }
}

impl Negotiation {
    /// A negotiation waiting for the client's flags (send [`Self::greeting`] first).
    pub fn new() -> Self {
        Negotiation {
            phase: Phase::ClientFlags,
            no_zeroes: false,
        }
    }

    /// The server's first bytes.
    pub fn greeting() -> [u8; GREETING_BYTES] {
        let mut out = [0u8; GREETING_BYTES];
        out[0..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
        out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
        out[16..18].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        out
    }

    /// Consumes at most one unit from `input`, appends the replies to `out`.
    ///
    /// Returns `Ok(None)` when `input` holds no complete unit yet, else the
    /// number of bytes consumed and what to do next.
    pub fn advance<E: Exports>(
        &mut self,
        input: &[u8],
        exports: &E,
        out: &mut Vec<u8>,
    ) -> Advance<E::Handle> {
        match self.phase {
            Phase::Finished => Err(ProtocolError::NegotiationFinished),
            Phase::ClientFlags => {
                let Some(bytes) = input.get(0..4) else {
                    return Ok(None);
                };
                let flags = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
                    self.phase = Phase::Finished;
                    return Err(ProtocolError::UnknownClientFlags { flags });
                }
                self.no_zeroes = flags & FLAG_C_NO_ZEROES != 0;
                self.phase = Phase::Options;
                Ok(Some((4, NegotiationStep::Continue)))
            }
            Phase::Options => {
                let decoded = decode_option(input).inspect_err(|_| self.phase = Phase::Finished)?;
                let Some((used, request)) = decoded else {
                    return Ok(None);
                };
                let step = self.answer(request, exports, out);
                if !matches!(step, NegotiationStep::Continue) {
                    self.phase = Phase::Finished;
                }
                Ok(Some((used, step)))
            }
        }
    }

    fn answer<E: Exports>(
        &self,
        request: OptionRequest,
        exports: &E,
        out: &mut Vec<u8>,
    ) -> NegotiationStep<E::Handle> {
        match request {
            OptionRequest::ExportName { name } => match exports.open(&name) {
                Ok((details, handle)) => {
                    out.extend_from_slice(&details.size_bytes.to_be_bytes());
                    out.extend_from_slice(&details.transmission_flags.to_be_bytes());
                    if !self.no_zeroes {
                        out.extend_from_slice(&[0u8; EXPORT_NAME_ZEROES_BYTES]);
                    }
                    NegotiationStep::Transmission { details, handle }
                }
                // The spec leaves no way to report an error to EXPORT_NAME.
                Err(_) => NegotiationStep::Close,
            },
            OptionRequest::Info {
                name,
                info_requests,
            } => {
                // INFO only describes: the opened handle is dropped here.
                let _ = answer_info(OPT_INFO, &name, &info_requests, exports, out);
                NegotiationStep::Continue
            }
            OptionRequest::Go {
                name,
                info_requests,
            } => match answer_info(OPT_GO, &name, &info_requests, exports, out) {
                Ok((details, handle)) => NegotiationStep::Transmission { details, handle },
                Err(()) => NegotiationStep::Continue,
            },
            OptionRequest::List => {
                for export in exports.list() {
                    let name = truncated(&export.name);
                    let description = truncated(&export.description);
                    let len = 4 + name.len() + description.len();
                    option_reply_header(out, OPT_LIST, REP_SERVER, len);
                    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
                    out.extend_from_slice(name);
                    out.extend_from_slice(description);
                }
                option_reply(out, OPT_LIST, REP_ACK, &[]);
                NegotiationStep::Continue
            }
            OptionRequest::Abort => {
                option_reply(out, OPT_ABORT, REP_ACK, &[]);
                NegotiationStep::Close
            }
            OptionRequest::Invalid { option, reason } => {
                option_reply(out, option, REP_ERR_INVALID, reason.as_bytes());
                NegotiationStep::Continue
            }
            OptionRequest::Unsupported { option } => {
                option_reply(
                    out,
                    option,
                    REP_ERR_UNSUP,
                    b"option not supported by hadisk",
                );
                NegotiationStep::Continue
            }
        }
    }
}

/// Replies to INFO or GO: info items then ACK, or one error reply.
fn answer_info<E: Exports>(
    option: u32,
    name: &str,
    info_requests: &[u16],
    exports: &E,
    out: &mut Vec<u8>,
) -> Result<(ExportDetails, E::Handle), ()> {
    let (details, handle) = match exports.open(name) {
        Ok(opened) => opened,
        Err(refusal) => {
            let (reply_type, message) = refusal.reply_type_and_message();
            option_reply(out, option, reply_type, truncated(message));
            return Err(());
        }
    };
    let mut export = Vec::with_capacity(12);
    export.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    export.extend_from_slice(&details.size_bytes.to_be_bytes());
    export.extend_from_slice(&details.transmission_flags.to_be_bytes());
    option_reply(out, option, REP_INFO, &export);
    if info_requests.contains(&INFO_NAME) {
        info_string(out, option, INFO_NAME, &details.name);
    }
    if info_requests.contains(&INFO_DESCRIPTION) && !details.description.is_empty() {
        info_string(out, option, INFO_DESCRIPTION, &details.description);
    }
    // Sent even when not requested (allowed by the spec): the values are the
    // defaults, so a client that ignores them loses nothing.
    let mut block = Vec::with_capacity(14);
    block.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    block.extend_from_slice(&limits::MIN_BLOCK_BYTES.to_be_bytes());
    block.extend_from_slice(&limits::PREFERRED_BLOCK_BYTES.to_be_bytes());
    block.extend_from_slice(&limits::MAX_PAYLOAD_BYTES.to_be_bytes());
    option_reply(out, option, REP_INFO, &block);
    option_reply(out, option, REP_ACK, &[]);
    Ok((details, handle))
}

fn info_string(out: &mut Vec<u8>, option: u32, info: u16, text: &str) {
    let text = truncated(text);
    option_reply_header(out, option, REP_INFO, 2 + text.len());
    out.extend_from_slice(&info.to_be_bytes());
    out.extend_from_slice(text);
}

/// A string cut to the spec's limit (at a byte boundary; clients treat it as text).
fn truncated(text: &str) -> &[u8] {
    let bytes = text.as_bytes();
    &bytes[..bytes.len().min(limits::MAX_STRING_BYTES)]
}

fn option_reply_header(out: &mut Vec<u8>, option: u32, reply_type: u32, len: usize) {
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply_type.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

fn option_reply(out: &mut Vec<u8>, option: u32, reply_type: u32, data: &[u8]) {
    option_reply_header(out, option, reply_type, data.len());
    out.extend_from_slice(data);
}

/// Decodes one client option (check then parse).
///
/// `Ok(None)`: incomplete. A malformed option of a known kind decodes to
/// [`OptionRequest::Invalid`] (answered, negotiation goes on); only a bad magic
/// or an over-long declared length is a [`ProtocolError`].
pub fn decode_option(input: &[u8]) -> Result<Option<(usize, OptionRequest)>, ProtocolError> {
    let Some(header) = input.get(0..OPTION_HEADER_BYTES) else {
        return Ok(None);
    };
    let magic = be_u64(&header[0..8]);
    if magic != IHAVEOPT {
        return Err(ProtocolError::BadOptionMagic { magic });
    }
    let option = be_u32(&header[8..12]);
    let length_bytes = be_u32(&header[12..16]);
    if length_bytes > limits::MAX_OPTION_DATA_BYTES {
        return Err(ProtocolError::OptionTooLong {
            option,
            length_bytes,
            limit_bytes: limits::MAX_OPTION_DATA_BYTES,
        });
    }
    let end = OPTION_HEADER_BYTES + length_bytes as usize;
    let Some(data) = input.get(OPTION_HEADER_BYTES..end) else {
        return Ok(None);
    };
    Ok(Some((end, parse_option(option, data))))
}

fn parse_option(option: u32, data: &[u8]) -> OptionRequest {
    match option {
        OPT_EXPORT_NAME => match std::str::from_utf8(data) {
            Ok(name) => OptionRequest::ExportName {
                name: name.to_owned(),
            },
            // Unanswerable: an EXPORT_NAME with a non-UTF-8 name names no export.
            Err(_) => OptionRequest::ExportName {
                name: String::from_utf8_lossy(data).into_owned(),
            },
        },
        OPT_ABORT => OptionRequest::Abort,
        OPT_LIST if data.is_empty() => OptionRequest::List,
        OPT_LIST => OptionRequest::Invalid {
            option,
            reason: "NBD_OPT_LIST carries no data",
        },
        OPT_INFO | OPT_GO => match parse_info_data(data) {
            Ok((name, info_requests)) if option == OPT_GO => OptionRequest::Go {
                name,
                info_requests,
            },
            Ok((name, info_requests)) => OptionRequest::Info {
                name,
                info_requests,
            },
            Err(reason) => OptionRequest::Invalid { option, reason },
        },
        _ => OptionRequest::Unsupported { option },
    }
}

/// INFO/GO data: name length u32 | name | count u16 | count x u16.
fn parse_info_data(data: &[u8]) -> Result<(String, Vec<u16>), &'static str> {
    const MALFORMED: &str = "malformed NBD_OPT_INFO/NBD_OPT_GO data";
    let name_len = data.get(0..4).map(be_u32).ok_or(MALFORMED)? as usize;
    let name_end = 4usize.checked_add(name_len).ok_or(MALFORMED)?;
    let name = data.get(4..name_end).ok_or(MALFORMED)?;
    let name = std::str::from_utf8(name).map_err(|_| "export name is not UTF-8")?;
    let count = data
        .get(name_end..name_end + 2)
        .map(be_u16)
        .ok_or(MALFORMED)? as usize;
    let items = &data[name_end + 2..];
    if items.len() != count * 2 {
        return Err(MALFORMED);
    }
    let info_requests = items.chunks_exact(2).map(be_u16).collect();
    Ok((name.to_owned(), info_requests))
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct TestExports;
    impl Exports for TestExports {
        type Handle = u32;
        fn list(&self) -> Vec<ExportListing> {
            vec![ExportListing {
                name: "data".into(),
                description: "the data".into(),
            }]
        }
        fn open(&self, name: &str) -> Result<(ExportDetails, u32), Refusal> {
            match name {
                "data" | "" => Ok((
                    ExportDetails {
                        name: "data".into(),
                        description: "the data".into(),
                        size_bytes: 1 << 20,
                        transmission_flags: crate::transmission_flags(false, true),
                    },
                    7,
                )),
                "sec" => Err(Refusal::Policy(
                    "resource sec is Secondary on node beta".into(),
                )),
                _ => Err(Refusal::Unknown(format!("no export {name}"))),
            }
        }
    }

    fn option(code: u32, data: &[u8]) -> Vec<u8> {
        let mut v = IHAVEOPT.to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    fn go_data(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            v.extend_from_slice(&i.to_be_bytes());
        }
        v
    }

    /// Parses option replies into (option, type, data).
    fn replies(mut out: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut v = Vec::new();
        while !out.is_empty() {
            assert_eq!(be_u64(&out[0..8]), OPTION_REPLY_MAGIC);
            let len = be_u32(&out[16..20]) as usize;
            v.push((
                be_u32(&out[8..12]),
                be_u32(&out[12..16]),
                out[20..20 + len].to_vec(),
            ));
            out = &out[20 + len..];
        }
        v
    }

    fn started() -> Negotiation {
        let mut n = Negotiation::new();
        let mut out = Vec::new();
        let r = n
            .advance(&3u32.to_be_bytes(), &TestExports, &mut out)
            .unwrap();
        assert!(matches!(r, Some((4, NegotiationStep::Continue))));
        assert!(out.is_empty());
        n
    }

    #[test]
    fn greeting_is_nbdmagic_ihaveopt_fixed_newstyle_no_zeroes() {
        let g = Negotiation::greeting();
        assert_eq!(&g[0..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..18], &[0, 3]);
    }

    #[test]
    fn unknown_client_flags_are_fatal() {
        let mut n = Negotiation::new();
        let err = n
            .advance(&[0, 0, 0, 4], &TestExports, &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.to_string(), "client sent unknown handshake flags 0x4");
    }

    #[test]
    fn go_replies_export_name_description_block_size_then_ack() {
        let mut n = started();
        let mut out = Vec::new();
        let mut input = option(
            OPT_GO,
            &go_data("data", &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]),
        );
        input.extend_from_slice(b"REST");
        let (used, step) = n.advance(&input, &TestExports, &mut out).unwrap().unwrap();
        assert_eq!(
            used,
            input.len() - 4,
            "transmission bytes are left to the caller"
        );
        let NegotiationStep::Transmission { details, handle } = step else {
            panic!("not transmission")
        };
        assert_eq!((details.size_bytes, handle), (1 << 20, 7));
        let r = replies(&out);
        let types: Vec<u16> = r[..r.len() - 1]
            .iter()
            .map(|(_, _, d)| be_u16(&d[0..2]))
            .collect();
        assert_eq!(
            types,
            vec![INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]
        );
        assert_eq!(&r[0].2[2..10], &(1u64 << 20).to_be_bytes());
        assert_eq!(&r[1].2[2..], b"data");
        assert_eq!(&r[2].2[2..], b"the data");
        assert_eq!(r[3].2[2..], [0, 0, 0, 1, 0, 0, 0x10, 0, 2, 0, 0, 0]);
        assert_eq!(r.last().unwrap(), &(OPT_GO, REP_ACK, vec![]));
        assert!(r.iter().all(|(o, _, _)| *o == OPT_GO));
        assert_eq!(
            n.advance(b"x", &TestExports, &mut out).unwrap_err(),
            ProtocolError::NegotiationFinished
        );
    }

    #[test]
    fn go_refused_sends_reason_and_negotiation_continues() {
        let mut n = started();
        let mut out = Vec::new();
        let (_, step) = n
            .advance(
                &option(OPT_GO, &go_data("sec", &[])),
                &TestExports,
                &mut out,
            )
            .unwrap()
            .unwrap();
        assert!(matches!(step, NegotiationStep::Continue));
        assert_eq!(
            replies(&out),
            vec![(
                OPT_GO,
                REP_ERR_POLICY,
                b"resource sec is Secondary on node beta".to_vec()
            )]
        );
        out.clear();
        let (_, step) = n
            .advance(
                &option(OPT_INFO, &go_data("nope", &[])),
                &TestExports,
                &mut out,
            )
            .unwrap()
            .unwrap();
        assert!(matches!(step, NegotiationStep::Continue));
        assert_eq!(
            replies(&out),
            vec![(OPT_INFO, REP_ERR_UNKNOWN, b"no export nope".to_vec())]
        );
    }

    #[test]
    fn info_does_not_enter_transmission() {
        let mut n = started();
        let mut out = Vec::new();
        let (_, step) = n
            .advance(&option(OPT_INFO, &go_data("", &[])), &TestExports, &mut out)
            .unwrap()
            .unwrap();
        assert!(matches!(step, NegotiationStep::Continue));
        assert_eq!(replies(&out).last().unwrap().1, REP_ACK);
    }

    #[test]
    fn list_abort_unsupported_and_invalid() {
        let mut n = started();
        let mut out = Vec::new();
        n.advance(&option(OPT_LIST, &[]), &TestExports, &mut out)
            .unwrap()
            .unwrap();
        let mut server = 4u32.to_be_bytes().to_vec();
        server.extend_from_slice(b"datathe data");
        assert_eq!(
            replies(&out),
            vec![(OPT_LIST, REP_SERVER, server), (OPT_LIST, REP_ACK, vec![])]
        );
        for (code, data, expected) in [
            (OPT_LIST, &b"x"[..], REP_ERR_INVALID),
            (OPT_STRUCTURED_REPLY, &[][..], REP_ERR_UNSUP),
            (OPT_STARTTLS, &[][..], REP_ERR_UNSUP),
            (99, &b"abc"[..], REP_ERR_UNSUP),
            (OPT_GO, &[0, 0, 0, 9, b'a'][..], REP_ERR_INVALID),
            (OPT_INFO, &[0, 0, 0, 0, 0, 2, 0, 1][..], REP_ERR_INVALID),
        ] {
            out.clear();
            let (_, step) = n
                .advance(&option(code, data), &TestExports, &mut out)
                .unwrap()
                .unwrap();
            assert!(matches!(step, NegotiationStep::Continue));
            let r = replies(&out);
            assert_eq!((r.len(), r[0].0, r[0].1), (1, code, expected));
        }
        out.clear();
        let (_, step) = n
            .advance(&option(OPT_ABORT, &[]), &TestExports, &mut out)
            .unwrap()
            .unwrap();
        assert!(matches!(step, NegotiationStep::Close));
        assert_eq!(replies(&out), vec![(OPT_ABORT, REP_ACK, vec![])]);
    }

    #[test]
    fn export_name_with_and_without_zeroes() {
        for (flags, expected_len) in [(1u32, 10 + 124), (3, 10)] {
            let mut n = Negotiation::new();
            let mut out = Vec::new();
            n.advance(&flags.to_be_bytes(), &TestExports, &mut out)
                .unwrap();
            let (_, step) = n
                .advance(&option(OPT_EXPORT_NAME, b"data"), &TestExports, &mut out)
                .unwrap()
                .unwrap();
            assert!(matches!(
                step,
                NegotiationStep::Transmission { handle: 7, .. }
            ));
            assert_eq!(out.len(), expected_len);
            assert_eq!(&out[0..8], &(1u64 << 20).to_be_bytes());
        }
        let mut n = started();
        let mut out = Vec::new();
        let (_, step) = n
            .advance(&option(OPT_EXPORT_NAME, b"nope"), &TestExports, &mut out)
            .unwrap()
            .unwrap();
        assert!(matches!(step, NegotiationStep::Close));
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_option_is_refused_from_the_header_alone() {
        let mut n = started();
        let mut header = IHAVEOPT.to_be_bytes().to_vec();
        header.extend_from_slice(&OPT_GO.to_be_bytes());
        header.extend_from_slice(&100_000_000u32.to_be_bytes());
        let err = n
            .advance(&header, &TestExports, &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "option 7 declares 100000000 bytes of data, more than the limit of 4230"
        );
    }

    #[test]
    fn bad_option_magic_is_fatal() {
        let mut n = started();
        let err = n
            .advance(&[0u8; 16], &TestExports, &mut Vec::new())
            .unwrap_err();
        assert_eq!(err, ProtocolError::BadOptionMagic { magic: 0 });
    }

    #[test]
    fn incomplete_is_not_an_error() {
        let full = option(OPT_GO, &go_data("data", &[INFO_BLOCK_SIZE]));
        for cut in 0..full.len() {
            let mut n = started();
            assert!(n
                .advance(&full[..cut], &TestExports, &mut Vec::new())
                .unwrap()
                .is_none());
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut n = Negotiation::new();
            let mut buf = Vec::new();
            let mut out = Vec::new();
            for chunk in chunks {
                buf.extend_from_slice(&chunk);
                loop {
                    match n.advance(&buf, &TestExports, &mut out) {
                        Ok(Some((used, NegotiationStep::Continue))) => { buf.drain(..used); }
                        Ok(Some(_)) | Err(_) => return Ok(()),
                        Ok(None) => break,
                    }
                }
            }
        }

        #[test]
        fn go_round_trips(name in "[a-z0-9]{0,40}", infos in proptest::collection::vec(any::<u16>(), 0..8)) {
            let data = option(OPT_GO, &go_data(&name, &infos));
            let (used, decoded) = decode_option(&data).unwrap().unwrap();
            prop_assert_eq!(used, data.len());
            prop_assert_eq!(decoded, OptionRequest::Go { name, info_requests: infos });
        }
    }
}
