//! Loopback ports for test daemons, shared by `tests/common` and
//! `tests/agent_harness.rs`.

/// A loopback port nobody listens on, never the same twice in this test
/// process: the kernel may hand a just-released port out again at once, and
/// a pair whose two nodes got one port is refused by the config parser
/// ("both hosts ... use the address"), which failed CI once.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}
