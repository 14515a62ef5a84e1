//! A payload whose pipes cannot be copied (the process is out of file
//! descriptors) is moved into memory, not lost. Its own test binary: it
//! lowers the process's descriptor limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use hadisk_payload::{PipeData, Source};

fn set_nofile(soft: u64, hard: u64) {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit for the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

fn highest_open_fd() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap()
}

#[test]
fn out_of_descriptors_the_payload_moves_to_memory_and_is_written_whole() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
    let payload = PipeData::from_bytes(&data).unwrap();
    let file = tempfile::tempfile().unwrap();
    file.set_len(1 << 20).unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid rlimit for the kernel to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }, 0);

    // No free descriptor (`tee` needs a new pipe): no number above the
    // ones open now, and the free ones below taken.
    set_nofile(highest_open_fd() + 1, old.rlim_max);
    let mut hogs = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hogs.push(f);
    }
    let source = payload.source();
    let written = payload.write_to_file(file.as_raw_fd(), 4096);
    let again = payload.source();
    drop(hogs);
    set_nofile(old.rlim_cur, old.rlim_max);

    let Source::Memory(bytes) = source.unwrap() else {
        panic!("a pipe copy was made without descriptors")
    };
    assert_eq!(&bytes[..], &data[..]);
    written.unwrap();
    assert!(matches!(again.unwrap(), Source::Memory(_)));
    assert_eq!(payload.pipes(), 0);
    let mut back = vec![0u8; data.len()];
    file.read_exact_at(&mut back, 4096).unwrap();
    assert_eq!(back, data);
    // Later consumers get the same bytes, with descriptors or without.
    assert_eq!(payload.to_vec().unwrap(), data);
}
