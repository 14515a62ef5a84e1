//! Feeds arbitrary bytes, split at arbitrary points, to the negotiation state
//! machine. Checks: no panic; consumed counts stay inside the input; replies
//! are well-framed option replies.
#![no_main]

use hadisk_nbd_proto::{
    transmission_flags, ExportDetails, ExportListing, Exports, Negotiation, NegotiationStep,
    Refusal,
};
use libfuzzer_sys::fuzz_target;

struct FuzzExports;
impl Exports for FuzzExports {
    type Handle = ();
    fn list(&self) -> Vec<ExportListing> {
        vec![ExportListing {
            name: "data".into(),
            description: "d".into(),
        }]
    }
    fn open(&self, name: &str) -> Result<(ExportDetails, ()), Refusal> {
        if name == "data" {
            let details = ExportDetails {
                name: name.into(),
                description: String::new(),
                size_bytes: 1 << 30,
                transmission_flags: transmission_flags(false, true),
            };
            Ok((details, ()))
        } else {
            Err(Refusal::Unknown(format!("no export {name}")))
        }
    }
}

/// Every reply to a non-final option is a sequence of complete option
/// replies (magic, option, type, length, data) with nothing left over.
fn assert_well_framed(mut out: &[u8]) {
    const MAGIC: u64 = 0x0003_e889_0455_65a9;
    while !out.is_empty() {
        assert!(out.len() >= 20, "truncated option reply header");
        let magic = u64::from_be_bytes(out[0..8].try_into().unwrap());
        assert_eq!(magic, MAGIC);
        let len = u32::from_be_bytes(out[16..20].try_into().unwrap()) as usize;
        assert!(len <= 4096 + 8, "option reply of {len} bytes");
        assert!(out.len() >= 20 + len, "truncated option reply data");
        out = &out[20 + len..];
    }
}

fuzz_target!(|data: &[u8]| {
    let (split, bytes) = match data.split_first() {
        Some((s, rest)) => (*s as usize, rest),
        None => return,
    };
    let mut negotiation = Negotiation::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(split.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match negotiation.advance(&buf, &FuzzExports, &mut out) {
                Ok(Some((used, step))) => {
                    assert!(used > 0 && used <= buf.len());
                    buf.drain(..used);
                    if !matches!(step, NegotiationStep::Continue) {
                        return;
                    }
                    assert_well_framed(&out);
                    out.clear();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
