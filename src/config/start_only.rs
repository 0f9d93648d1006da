//! Settings read once at start (listeners, HTTP/2 and HTTP/3 limits, threads, the client
//! timeouts of the listeners, the access log, the cache's size and shared tier, the admin
//! address). A reload keeps their running values and names each one the file changes as
//! waiting for a binary upgrade, so `/config` shows only what is in force.

use super::effective;
use super::{Config, ListenerConfig};
use serde_json::Value;

/// The `/config` keys (JSON pointers) whose values only a new process applies.
const START_ONLY: &[&str] = &[
    "/listener",
    "/http2",
    "/http3",
    "/server/threads",
    "/server/grace_period",
    "/server/upgrade_socket",
    "/server/header_timeout",
    "/server/keepalive_timeout",
    "/access_log",
    "/cache/max_size",
    "/cache/max_object_size",
    "/cache/lock_timeout",
    "/cache/shared",
    "/admin/listen",
];

/// A setting the file changes that the running process keeps until a binary upgrade.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// As the file names it: `listener`, `server.threads`, `cache.shared`.
    pub key: String,
    pub running: Value,
    pub in_file: Value,
}

impl Pending {
    /// One line for the log and the reload answer.
    pub fn describe(&self) -> String {
        format!(
            "{}: the file says {}, {} stays in force until a binary upgrade (`parapet run --upgrade`, then SIGQUIT to the old process)",
            self.key, self.in_file, self.running
        )
    }
}

/// `file` as a reload applies it over `running`: start-only settings keep their running
/// values (a staying TLS listener takes the file's certificates, which a reload does swap),
/// and each one the file changes is listed.
pub fn apply_reload(running: &Config, file: Config) -> (Config, Vec<Pending>) {
    let in_file = effective::render(&file);
    let mut applied = file;
    applied.listeners = running_listeners(&running.listeners, &applied.listeners);
    applied.http2 = running.http2.clone();
    applied.http3 = running.http3.clone();
    applied.access_log = running.access_log.clone();
    keep_start_only_server(running, &mut applied);
    keep_start_only_cache(running, &mut applied);
    keep_admin_listen(running, &mut applied);
    let in_force = effective::render(&applied);
    let pending = START_ONLY
        .iter()
        .filter_map(|pointer| {
            let file_value = in_file.pointer(pointer).cloned().unwrap_or(Value::Null);
            let running_value = in_force.pointer(pointer).cloned().unwrap_or(Value::Null);
            (file_value != running_value).then(|| Pending {
                key: pointer.trim_start_matches('/').replace('/', "."),
                running: running_value,
                in_file: file_value,
            })
        })
        .collect();
    (applied, pending)
}

/// The running listeners, each TLS one that the file keeps (same address, still TLS) with
/// the file's certificates.
fn running_listeners(running: &[ListenerConfig], file: &[ListenerConfig]) -> Vec<ListenerConfig> {
    running
        .iter()
        .map(|listener| {
            let mut kept = listener.clone();
            if let Some(new) = file
                .iter()
                .find(|f| f.address == listener.address && f.is_tls() && listener.is_tls())
            {
                kept.certificates = new.certificates.clone();
            }
            kept
        })
        .collect()
}

fn keep_start_only_server(running: &Config, applied: &mut Config) {
    let (from, to) = (&running.server, &mut applied.server);
    to.threads = from.threads;
    to.grace_period = from.grace_period;
    to.upgrade_socket = from.upgrade_socket.clone();
    to.header_timeout = from.header_timeout;
    to.keepalive_timeout = from.keepalive_timeout;
}

fn keep_start_only_cache(running: &Config, applied: &mut Config) {
    let (from, to) = (&running.cache, &mut applied.cache);
    to.max_size = from.max_size;
    to.max_object_size = from.max_object_size;
    to.lock_timeout = from.lock_timeout;
    to.shared = from.shared.clone();
}

/// The admin listener stays on its address; its token file and `protect_metrics` are read
/// per request, so the file's apply (none without an `[admin]` section).
fn keep_admin_listen(running: &Config, applied: &mut Config) {
    let Some(listen) = running.admin.as_ref().map(|a| a.listen) else {
        return;
    };
    let admin = applied.admin.get_or_insert(super::AdminConfig {
        listen,
        token_file: None,
        protect_metrics: false,
    });
    admin.listen = listen;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("test.toml")).expect("valid config")
    }

    const BASE: &str = r#"
[[listener]]
address = "127.0.0.1:8080"
[upstream.app]
[[upstream.app.server]]
address = "127.0.0.1:9001"
[[route]]
upstream = "app"
"#;

    #[test]
    fn a_reload_keeps_the_running_listener_and_names_the_change() {
        let running = parse(BASE);
        let file = parse(&BASE.replace("8080", "9090").replace("9001", "9002"));
        let (applied, pending) = apply_reload(&running, file);
        assert_eq!(applied.listeners[0].address.port(), 8080);
        assert_eq!(applied.upstreams["app"].servers[0].address.port(), 9002);
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0].key, "listener");
        assert!(pending[0].describe().contains("127.0.0.1:9090"));
        assert!(pending[0].describe().contains("binary upgrade"));
    }

    #[test]
    fn start_only_scalars_are_kept_and_reload_applied_ones_taken() {
        let running = parse(BASE);
        let file = parse(&format!(
            "[server]\nthreads = 97\nmerge_slashes = false\n[http2]\nmax_concurrent_streams = 9\n{BASE}"
        ));
        let (applied, pending) = apply_reload(&running, file);
        assert_ne!(applied.server.threads, 97);
        assert!(
            !applied.server.merge_slashes,
            "merge_slashes applies on reload"
        );
        assert_eq!(applied.http2, running.http2);
        let keys: Vec<_> = pending.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["http2", "server.threads"]);
    }

    #[test]
    fn an_unchanged_file_leaves_nothing_pending() {
        let running = parse(BASE);
        let (_, pending) = apply_reload(&running, parse(BASE));
        assert!(pending.is_empty(), "{pending:?}");
    }
}
