//! Who holds a lease: `{host}:{pid}` of the process (a run appends `:{run id}`), and whether such a holder is gone.
//!
//! After a crash (a killed process, a recycled Functions instance) the lease stays until it expires. A store that
//! lives on one machine (the file store) can tell more: a holder written on this host whose process no longer
//! exists cannot be running, so its lease is taken over at once instead of after its lifetime. Holders of other
//! hosts, and processes that still exist (even a reused pid), keep their lease until it expires: the safe side.

/// This host's name: `HOSTNAME`, else `COMPUTERNAME`, else the kernel's (`/proc/sys/kernel/hostname`), else
/// "galbridge".
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .ok()
        .filter(|name| !name.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "galbridge".into())
}

/// The lease holder naming this process: `{host}:{pid}`.
pub fn local_holder() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

/// True when `holder` (`{host}:{pid}[:…]`) names a process of this host that no longer exists. Only decidable where
/// `/proc` lists processes (Linux); elsewhere nobody is taken for gone.
pub fn holder_is_gone(holder: &str) -> bool {
    let mut parts = holder.splitn(3, ':');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    if host != host_name() || pid == std::process::id() {
        return false;
    }
    let proc_root = std::path::Path::new("/proc");
    proc_root.join("self").exists() && !proc_root.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_process_of_this_host_is_gone_and_nothing_else_is() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        let host = host_name();
        assert!(
            holder_is_gone(&format!("{host}:{pid}:run-1")),
            "an exited process"
        );
        assert!(!holder_is_gone(&local_holder()), "this process is alive");
        assert!(
            !holder_is_gone(&format!("{}:run-1", local_holder())),
            "this process, with a run id"
        );
        assert!(
            !holder_is_gone(&format!("another-host-{host}:{pid}")),
            "another host's process is never judged"
        );
        assert!(!holder_is_gone("crash-test"), "a holder of another shape");
    }
}
