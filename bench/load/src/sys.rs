//! What the generator reads about processes: its own CPU time (`getrusage`), and a server's
//! memory and CPU from `/proc` (summed over the server's process tree, so nginx's master and
//! workers count together).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch: the clock stamped into messages. Every process of a run
/// is on the same host, so stamps from one process can be compared in another.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// CPU seconds (user + system) this process has used so far.
pub fn self_cpu_secs() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => tv_secs(u.user_time()) + tv_secs(u.system_time()),
        Err(_) => 0.0,
    }
}

fn tv_secs(tv: nix::sys::time::TimeVal) -> f64 {
    tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6
}

/// Raises this process's soft open-file limit to its hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// `pid` and its descendants (children and grandchildren), found through `/proc/*/stat`.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(stat) = read_stat(p) {
                parents.push((p, stat.ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() && tree.len() < 4096 {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

struct Stat {
    ppid: u32,
    ticks: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces, start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // rest[0] is field 3 (state): ppid = field 4, utime = 14, stime = 15.
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    })
}

fn status_kb(pid: u32, file: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Memory of a server's process tree, in KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Memory {
    /// Sum of `VmRSS` over the tree (shared pages count once per process).
    pub rss_kb: u64,
    /// Sum of `Pss` from `smaps_rollup` (shared pages split between their users).
    pub pss_kb: u64,
    pub processes: usize,
}

/// Reads the memory of `pid`'s tree, or `None` when the process is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let tree = process_tree(pid);
    let mut m = Memory::default();
    for p in &tree {
        if let Some(kb) = status_kb(*p, "status", "VmRSS:") {
            m.rss_kb += kb;
            m.pss_kb += status_kb(*p, "smaps_rollup", "Pss:").unwrap_or(kb);
            m.processes += 1;
        }
    }
    (m.processes > 0).then_some(m)
}

/// CPU time used by `pid`'s tree so far.
pub fn tree_cpu(pid: u32) -> Duration {
    let tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as u64;
    let ticks: u64 = process_tree(pid)
        .iter()
        .filter_map(|p| read_stat(*p))
        .map(|s| s.ticks)
        .sum();
    Duration::from_micros(ticks * 1_000_000 / tck)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let m = memory(me).unwrap();
        assert!(m.rss_kb > 0 && m.processes >= 1);
    }

    #[test]
    fn cpu_time_grows_with_busy_work_and_both_readings_agree() {
        let me = std::process::id();
        let (self_before, tree_before) = (self_cpu_secs(), tree_cpu(me));
        // Half a second of spinning: even a tenth of a busy core is 50 ms of CPU.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(500) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let (self_after, tree_after) = (self_cpu_secs(), tree_cpu(me));
        let own = self_after - self_before;
        let tree = (tree_after - tree_before).as_secs_f64();
        assert!(own >= 0.02, "getrusage grew by {own} s");
        assert!(tree >= 0.02, "/proc grew by {tree} s");
        // The same process counted two ways (clock ticks of 10 ms in /proc); other tests of
        // this binary may run meanwhile, so each may see a little more than the spin.
        assert!(
            (self_after - tree_after.as_secs_f64()).abs() < 0.25,
            "getrusage {self_after} s, /proc {tree_after:?}"
        );
    }
}
