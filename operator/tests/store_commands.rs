//! The managed stores' start commands, run as written by this machine's own
//! servers: Redis gets its password without it ever being on a command line.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use parley_operator::build::statefulset::REDIS_START;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends one RESP command of plain words and reads the one-line answer.
fn ask(stream: &mut TcpStream, words: &[&str]) -> anyhow::Result<String> {
    let mut request = format!("*{}\r\n", words.len());
    for word in words {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

#[test]
fn redis_starts_with_its_password_and_no_password_in_argv() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = parley_testkit::free_port()?;
    let password = format!("pw{}", parley_testkit::short_id());
    // As the kubelet runs it: command + args, the password only in the env;
    // the test adds a port, address and directory of its own.
    let child = Command::new("sh")
        .args(["-c", REDIS_START, "redis-server", "--appendonly", "yes"])
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir.path())
        .env("REDIS_PASSWORD", &password)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let _server = Killed(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(e) if std::time::Instant::now() > deadline => {
                anyhow::bail!("redis-server did not listen on {port}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let argv = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(argv.starts_with("redis-server"), "the shell exec'd: {argv}");
    assert!(!argv.contains(&password), "password in argv: {argv}");
    assert!(ask(&mut stream, &["PING"])?.starts_with("-NOAUTH"));
    assert_eq!(ask(&mut stream, &["AUTH", "wrong"])?.get(..1), Some("-"));
    assert_eq!(ask(&mut stream, &["AUTH", &password])?, "+OK");
    assert_eq!(ask(&mut stream, &["CONFIG", "GET", "appendonly"])?, "*2");
    Ok(())
}
