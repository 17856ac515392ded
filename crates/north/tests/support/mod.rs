//! A mosquitto broker for the north crate's tests: the Debian package, started on a free
//! loopback port with persistence and a full log, stopped the way a service stop does.

#![allow(dead_code)] // each test file uses its own part of this

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-mqtt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn mosquitto() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto is not installed: run ./scripts/test, which installs it")
}

/// A mosquitto broker on loopback, with persistence and a full log.
pub struct Broker {
    pub port: u16,
    pub dir: PathBuf,
    /// Extra lines for the listener (TLS settings).
    pub listener: String,
    child: Option<Child>,
}

impl Broker {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, "")
    }

    /// A broker whose listener gets `listener` lines too (e.g. TLS files).
    pub fn start_with(dir: &Path, listener: &str) -> Self {
        let mut b = Self { port: free_port(), dir: dir.to_owned(), listener: listener.to_owned(), child: None };
        b.restart();
        b
    }

    pub fn restart(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        let text = format!(
            // `user root`: started as root (CI), mosquitto would switch to its own user and lose
            // access to this folder; started as anyone else, the line has no effect.
            // `max_queued_messages`: the broker's default of 1000 per offline subscriber would drop
            // the backlog the sink sends after an outage before mosquitto_sub is back.
            "user root\nlistener {} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n\
             persistence true\npersistence_location {}/\n\
             log_dest file {}\nlog_type all\n",
            self.port,
            self.dir.display(),
            self.log_path().display()
        ) + &self.listener;
        std::fs::write(&conf, text).unwrap();
        let child =
            Command::new(mosquitto()).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker the way a service stop does (SIGTERM: it saves its persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("mosquitto.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
