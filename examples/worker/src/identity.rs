//! The worker id a fleet process uses when none is given: the ECS task id inside ECS, else
//! `hostname-pid`.

/// The default worker id of this process.
///
/// In order: `ECS_TASK_ID` when set; the task id parsed from `ECS_CONTAINER_METADATA_URI_V4`
/// (see [`task_id_from_metadata_uri`]); else `<hostname>-<pid>`. A worker id must be unique in
/// the fleet: an ECS task id is, and so is a host name plus process id.
pub fn default_worker_id() -> String {
    default_worker_id_from(|name| std::env::var(name).ok(), &hostname(), std::process::id())
}

/// [`default_worker_id`] with the environment, host name and pid given (for tests).
pub fn default_worker_id_from(env: impl Fn(&str) -> Option<String>, hostname: &str, pid: u32) -> String {
    let non_empty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if let Some(task) = non_empty(env("ECS_TASK_ID")) {
        return task;
    }
    if let Some(task) = non_empty(env("ECS_CONTAINER_METADATA_URI_V4")).as_deref().and_then(task_id_from_metadata_uri) {
        return task;
    }
    format!("{hostname}-{pid}")
}

/// The task id in an ECS task metadata v4 URI: its last path segment. On Fargate that segment
/// is `<32 hex task id>-<container number>` and only the task id is kept; otherwise (EC2
/// launch type) the whole segment, which is unique per container, is returned.
pub fn task_id_from_metadata_uri(uri: &str) -> Option<String> {
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    // Nothing after the host: not a metadata path.
    let (_host, path) = after_scheme.split_once('/')?;
    let segment = path.trim_end_matches('/').rsplit('/').next()?.trim();
    if segment.is_empty() {
        return None;
    }
    if let Some((task, container)) = segment.split_once('-') {
        let is_task = task.len() == 32 && task.bytes().all(|b| b.is_ascii_hexdigit());
        if is_task && !container.is_empty() && container.bytes().all(|b| b.is_ascii_digit()) {
            return Some(task.to_owned());
        }
    }
    Some(segment.to_owned())
}

/// This machine's host name: `/proc/sys/kernel/hostname` on Linux, else `$HOSTNAME`, else
/// `worker`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_uris() {
        let cases = [
            (
                "http://169.254.170.2/v4/8f03e41243824aea923aca126495f665-2785273556",
                Some("8f03e41243824aea923aca126495f665"),
            ),
            (
                "http://169.254.170.2/v4/0206b271-b33f-47ab-86c6-a0ba208a70a9/",
                Some("0206b271-b33f-47ab-86c6-a0ba208a70a9"),
            ),
            ("http://169.254.170.2/v4/abc", Some("abc")),
            ("http://169.254.170.2", None),
            ("", None),
        ];
        for (uri, want) in cases {
            assert_eq!(task_id_from_metadata_uri(uri).as_deref(), want, "{uri}");
        }
    }

    #[test]
    fn precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        };
        const URI: &str = "http://169.254.170.2/v4/8f03e41243824aea923aca126495f665-1";
        assert_eq!(default_worker_id_from(env(&[("ECS_TASK_ID", "t1")]), "h", 7), "t1");
        assert_eq!(
            default_worker_id_from(env(&[("ECS_CONTAINER_METADATA_URI_V4", URI)]), "h", 7),
            "8f03e41243824aea923aca126495f665"
        );
        assert_eq!(default_worker_id_from(env(&[("ECS_TASK_ID", " ")]), "h", 7), "h-7");
        assert_eq!(default_worker_id_from(env(&[]), "host", 42), "host-42");
    }
}
