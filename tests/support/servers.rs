//! Untraced peers for the traced programs: loopback only.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed on drop.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until something accepts TCP connections on `host:port`.
pub fn wait_tcp(host: &str, port: u16) {
    let start = Instant::now();
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    while TcpStream::connect(&addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "nothing listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `python3 -m http.server` serving `dir` on `host` (127.0.0.1 or ::1).
pub fn http_server(dir: &Path, host: &str, port: u16) -> Server {
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", host, &port.to_string()])
        .current_dir(dir)
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is installed");
    let server = Server(child);
    wait_tcp(host, port);
    server
}

/// A python3 script run untraced in the background.
pub fn python(script: &str, args: &[&str]) -> Server {
    let child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env_remove("LD_PRELOAD")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is installed");
    Server(child)
}

/// A sink on 127.0.0.1:`port`, untraced: reads each connection to its end, then closes it.
/// Returned once it listens.
pub fn sink(port: u16) -> Server {
    const SINK: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
while True:
    c, _ = s.accept()
    while c.recv(65536):
        pass
    c.close()
"#;
    let server = python(SINK, &[&port.to_string()]);
    wait_tcp("127.0.0.1", port);
    server
}
