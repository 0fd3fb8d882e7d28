//! Processes started by `run` and what is read about them from `/proc`.

use super::*;

/// Processes started by `run`, stopped when it returns (whatever happens).
#[derive(Default)]
pub(crate) struct Procs(Vec<(String, Child)>);

impl Procs {
    pub(crate) fn add(&mut self, name: &str, c: Child) -> u32 {
        let pid = c.id();
        self.0.push((name.to_string(), c));
        pid
    }

    /// Start `cmd` (its stdout piped to us, stderr shared), keep it as `name`, and read the
    /// first line it prints (how our helpers say they are ready); its pid and that line.
    pub(crate) fn spawn_announcing(&mut self, name: &str, cmd: &mut Command) -> Res<(u32, String)> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(err(&format!("start {name}")))?;
        let out = child.stdout.take().ok_or(format!("{name} stdout"))?;
        let pid = self.add(name, child);
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .map_err(err(name))?;
        Ok((pid, line.trim().to_string()))
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub(crate) fn stop(&mut self, pid: u32, grace: Duration) {
        if let Some(i) = self.0.iter().position(|(_, c)| c.id() == pid) {
            let (_, mut c) = self.0.remove(i);
            terminate(&mut c, grace);
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in self.0.iter_mut().rev() {
            terminate(c, Duration::from_secs(5));
        }
    }
}

pub(crate) fn terminate(c: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = c.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// A free loopback port (bound and released: a tiny race, acceptable on a bench machine).
pub(crate) fn free_port() -> Res<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(err("bind"))?;
    Ok(l.local_addr().map_err(err("addr"))?.port())
}

/// User + system CPU time of a process so far (`/proc/<pid>/stat`, clock ticks of 10 ms).
pub(crate) fn cpu_time(pid: u32) -> Duration {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return Duration::ZERO;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here (0-based).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Peak resident set size (`VmHWM`) of a process, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Resident set size now (`VmRSS`) of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
