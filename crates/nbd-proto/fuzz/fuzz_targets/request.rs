//! Decodes a stream of request headers and validates each against an export.
//! Checks: no panic; decode/encode round trips; validated ranges stay inside.
#![no_main]

use hadisk_nbd_proto::{validate, Request, ValidatedRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((size_bytes, mut rest)) = data.split_at_checked(8) else {
        return;
    };
    let mut size = [0u8; 8];
    size.copy_from_slice(size_bytes);
    let size_bytes = u64::from_le_bytes(size) >> (size[0] % 64);
    let read_only = size[1] & 1 == 1;
    while let Ok(Some(request)) = Request::decode(rest) {
        assert_eq!(&request.encode()[..], &rest[..28]);
        match validate(&request, size_bytes, read_only) {
            Ok(ValidatedRequest::Read {
                offset_bytes,
                length_bytes,
            })
            | Ok(ValidatedRequest::Write {
                offset_bytes,
                length_bytes,
                ..
            })
            | Ok(ValidatedRequest::Trim {
                offset_bytes,
                length_bytes,
                ..
            })
            | Ok(ValidatedRequest::WriteZeroes {
                offset_bytes,
                length_bytes,
                ..
            }) => {
                assert!(
                    u128::from(offset_bytes) + u128::from(length_bytes) <= u128::from(size_bytes)
                );
                assert!(!read_only || matches!(request.command, hadisk_nbd_proto::Command::Read));
            }
            _ => {}
        }
        let skip = 28usize.saturating_add(request.payload_bytes() as usize);
        if skip > rest.len() {
            return;
        }
        rest = &rest[skip..];
    }
});
