//! A private mosquitto on a free loopback port, so the broker's CPU can be
//! sampled and no other user of the shared broker disturbs the numbers.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BenchError;

pub fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::Io("bind".into(), e))?;
    Ok(l.local_addr()
        .map_err(|e| BenchError::Io("addr".into(), e))?
        .port())
}

pub struct Broker {
    pub port: u16,
    child: Child,
}

impl Broker {
    /// Starts `mosquitto` with a config in `dir`; waits until it accepts.
    pub fn start(dir: &Path) -> Result<Broker, BenchError> {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::Io(dir.display().to_string(), e))?;
        let port = free_port()?;
        let conf = dir.join("mosquitto.conf");
        // Queues large enough that a subscriber briefly behind loses nothing.
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 1000000\nmax_inflight_messages 0\nlog_type error\nset_tcp_nodelay true\n"
        );
        std::fs::write(&conf, text).map_err(|e| BenchError::Io(conf.display().to_string(), e))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Io("mosquitto (apt-get install mosquitto)".into(), e))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(BenchError::Timeout("mosquitto to listen".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Broker { port, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
