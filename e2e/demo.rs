//! End-to-end test of `gangway demo`: the built binary, real curl through the proxy, a
//! WebSocket client, and SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

mod support;

use support::{ChildGuard, wait_until_ready};

/// Generous bounds, because other builds may load the machine; the demo starts in well under a
/// second when it is idle.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the demo's stdout until the last line of its instructions.
fn read_instructions(stdout: std::process::ChildStdout) -> Vec<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    loop {
        let remaining = START_TIMEOUT.saturating_sub(started.elapsed());
        match receiver.recv_timeout(remaining) {
            Ok(line) => {
                let last = line.contains("Stop with Ctrl-C");
                lines.push(line);
                if last {
                    return lines;
                }
            }
            Err(error) => panic!("demo printed no instructions ({error}); so far: {lines:#?}"),
        }
    }
}

fn curl(command_line: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{command_line} --silent --show-error --max-time 10"
        ))
        .output()
        .expect("failed to run curl");
    assert!(
        output.status.success(),
        "{command_line} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("curl output is not UTF-8")
}

fn find_line<'a>(lines: &'a [String], needle: &str) -> &'a str {
    lines
        .iter()
        .map(|line| line.trim())
        .find(|line| line.starts_with("curl") && line.contains(needle))
        .unwrap_or_else(|| panic!("no curl line with {needle:?} in {lines:#?}"))
}

/// Returns the port that follows `prefix` in the first line containing it.
fn port_after(lines: &[String], prefix: &str) -> u16 {
    lines
        .iter()
        .find_map(|line| {
            let rest = &line[line.find(prefix)? + prefix.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no port after {prefix:?} in {lines:#?}"))
}

fn echo_reply(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|error| panic!("not an echo reply ({error}): {body}"))
}

#[test]
fn demo_serves_printed_curl_lines() {
    // Port 0 everywhere: the demo prints the ports it is bound to, so no other test can take
    // them between a port probe and the bind.
    let stderr_file = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gangway"))
        .arg("demo")
        .args(["--http-listen", "127.0.0.1:0"])
        .args(["--https-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(stderr_file.reopen().unwrap())
        .spawn()
        .expect("failed to start gangway demo");
    let mut demo = ChildGuard(child);
    let lines = read_instructions(demo.0.stdout.take().unwrap());
    let directory: PathBuf = lines[0]
        .rsplit_once(' ')
        .map(|(_, path)| PathBuf::from(path))
        .expect("the first line names the manifest directory");
    assert!(directory.is_dir(), "{}", directory.display());
    let http = port_after(&lines, "http://echo.gangway.test:");
    let https = port_after(&lines, "https://secure.gangway.test:");
    let admin = port_after(&lines, "Admin: http://127.0.0.1:");
    wait_until_ready(admin, START_TIMEOUT);

    // HTTP by host and path.
    let reply = echo_reply(&curl(find_line(&lines, "http://echo.gangway.test")));
    assert_eq!(reply["backend"], "echo-a");
    assert_eq!(reply["path"], "/");
    assert_eq!(
        reply["headers"]["host"],
        format!("echo.gangway.test:{http}")
    );
    let reply = echo_reply(&curl(find_line(&lines, "/b/anything")));
    assert_eq!(reply["backend"], "echo-b");
    assert_eq!(reply["path"], "/b/anything");

    // A wildcard host.
    let reply = echo_reply(&curl(find_line(&lines, "hello.apps.gangway.test")));
    assert_eq!(reply["backend"], "echo-b");

    // HTTPS with the generated certificate.
    let reply = echo_reply(&curl(find_line(&lines, "https://secure.gangway.test")));
    assert_eq!(reply["backend"], "echo-a");

    // Plain HTTP to the TLS host is redirected.
    let head = curl(find_line(&lines, "http://secure.gangway.test"));
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("location: https://secure.gangway.test:{https}/")),
        "{head}"
    );

    // WebSocket echo through the proxy.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut request = format!("ws://127.0.0.1:{http}/ws")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("host", "echo.gangway.test".parse().unwrap());
        let (mut socket, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(request),
        )
        .await
        .expect("WebSocket handshake timed out")
        .expect("WebSocket handshake failed");
        socket.send(Message::text("ping")).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no WebSocket echo")
            .expect("WebSocket closed")
            .unwrap();
        assert_eq!(echoed, Message::text("ping"));
    });

    // SIGTERM stops it cleanly and removes the manifest directory.
    let status = demo.terminate(STOP_TIMEOUT);
    let logs = std::fs::read_to_string(stderr_file.path()).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "logs:\n{logs}");
    assert!(
        !directory.exists(),
        "{} was not removed",
        directory.display()
    );
}
