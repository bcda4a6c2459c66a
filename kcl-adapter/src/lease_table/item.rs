//! Mapping between [`Lease`] and a lease-table item in Java KCL's layout.

use std::collections::HashMap;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use kcl_core::{
    Checkpoint, HandoffRequest, Lease, LeaseKey, LeaseStoreError, LeaseStoreErrorKind, ShardId, WindowState, WorkerId,
};

/// Attribute names of the lease table, as Java KCL (with the DynamoDB Streams adapter) writes
/// them, so a table written by KCL can be continued from its checkpoints.
pub mod attribute {
    /// Hash key (S): the shard id, or a worker heartbeat key.
    pub const LEASE_KEY: &str = "leaseKey";
    /// S: the owning worker; absent when unowned.
    pub const LEASE_OWNER: &str = "leaseOwner";
    /// N: the fencing counter, bumped by every write.
    pub const LEASE_COUNTER: &str = "leaseCounter";
    /// S: a sequence number, `TRIM_HORIZON`, `LATEST` or `SHARD_END`.
    pub const CHECKPOINT: &str = "checkpoint";
    /// N: always 0 for DynamoDB Streams.
    pub const CHECKPOINT_SUB_SEQUENCE_NUMBER: &str = "checkpointSubSequenceNumber";
    /// N: owner changes since the last checkpoint.
    pub const OWNER_SWITCHES_SINCE_CHECKPOINT: &str = "ownerSwitchesSinceCheckpoint";
    /// SS: the parent shard ids (singular name, set type); absent when there are none.
    pub const PARENT_SHARD_ID: &str = "parentShardId";
    /// SS: the child shard ids, written at shard end; absent when unknown.
    pub const CHILD_SHARD_IDS: &str = "childShardIds";
    /// S: a checkpoint of an unfinished two-phase commit.
    pub const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
    /// N: sub-sequence number of the pending checkpoint (KCL; removed with it).
    pub const PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER: &str = "pendingCheckpointSubSequenceNumber";
    /// B: application state of the pending checkpoint (KCL; removed with it).
    pub const PENDING_CHECKPOINT_STATE: &str = "pendingCheckpointState";
    /// Prefix of N attributes on a worker heartbeat only (not KCL attributes): one per worker
    /// asking this one to hand leases over, named by the asking worker's id, with how many;
    /// absent when there are none.
    pub const HANDOFF_REQUEST_PREFIX: &str = "handoffRequest:";
    /// N (not a KCL attribute): start of the open tumbling window, in milliseconds since
    /// the Unix epoch; written with each checkpoint, absent without tumbling windows.
    pub const WINDOW_START: &str = "tumblingWindowStart";
    /// N: end of the open tumbling window (exclusive), in milliseconds since the Unix epoch.
    pub const WINDOW_END: &str = "tumblingWindowEnd";
    /// B: the open tumbling window's state, as the processor returned it; absent when empty.
    pub const WINDOW_STATE: &str = "tumblingWindowState";
}

use attribute as a;

/// The item for a new lease.
pub(crate) fn to_item(lease: &Lease) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::new();
    item.insert(a::LEASE_KEY.to_owned(), AttributeValue::S(lease.key.as_str().to_owned()));
    if let Some(owner) = &lease.owner {
        item.insert(a::LEASE_OWNER.to_owned(), AttributeValue::S(owner.as_str().to_owned()));
    }
    item.insert(a::LEASE_COUNTER.to_owned(), number(lease.counter));
    item.insert(a::CHECKPOINT.to_owned(), AttributeValue::S(lease.checkpoint.to_store_string()));
    item.insert(a::CHECKPOINT_SUB_SEQUENCE_NUMBER.to_owned(), number(0));
    item.insert(a::OWNER_SWITCHES_SINCE_CHECKPOINT.to_owned(), number(lease.owner_switches_since_checkpoint));
    // DynamoDB rejects empty sets: leave the attribute out instead.
    if let Some(set) = string_set(&lease.parent_shard_ids) {
        item.insert(a::PARENT_SHARD_ID.to_owned(), set);
    }
    if let Some(set) = string_set(&lease.child_shard_ids) {
        item.insert(a::CHILD_SHARD_IDS.to_owned(), set);
    }
    if let Some(pending) = &lease.pending_checkpoint {
        item.insert(a::PENDING_CHECKPOINT.to_owned(), AttributeValue::S(pending.to_store_string()));
    }
    for r in &lease.handoff_requests {
        item.insert(request_attribute(&r.from), number(u64::from(r.leases)));
    }
    if let Some(window) = &lease.window {
        item.extend(window_attributes(window));
    }
    item
}

/// The attributes that store a tumbling window (the state is left out when empty).
pub(crate) fn window_attributes(window: &WindowState) -> Vec<(String, AttributeValue)> {
    let mut out = vec![
        (a::WINDOW_START.to_owned(), number(epoch_millis(window.start))),
        (a::WINDOW_END.to_owned(), number(epoch_millis(window.end))),
    ];
    if !window.state.is_empty() {
        out.push((a::WINDOW_STATE.to_owned(), AttributeValue::B(Blob::new(window.state.clone()))));
    }
    out
}

fn epoch_millis(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis()).unwrap_or(u64::MAX)
}

/// The attribute holding `from`'s handoff request on a heartbeat.
pub(crate) fn request_attribute(from: &WorkerId) -> String {
    format!("{}{from}", a::HANDOFF_REQUEST_PREFIX)
}

/// A number attribute.
pub(crate) fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn string_set(ids: &[ShardId]) -> Option<AttributeValue> {
    let mut set: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    set.sort();
    set.dedup();
    (!set.is_empty()).then_some(AttributeValue::Ss(set))
}

/// Reads a lease from an item; attributes this crate does not know are ignored (and left in
/// the table by every write, which only touches its own attributes).
pub(crate) fn from_item(table: &str, item: &HashMap<String, AttributeValue>) -> Result<Lease, LeaseStoreError> {
    let key = match item.get(a::LEASE_KEY) {
        Some(AttributeValue::S(key)) => key.clone(),
        other => {
            let message =
                format!("lease table {table}: an item has {} instead of a string `{}`", found(other), a::LEASE_KEY);
            return Err(LeaseStoreError::new(LeaseStoreErrorKind::Malformed, message));
        }
    };
    let bad = |attr: &str, expected: &str, value: Option<&AttributeValue>| {
        LeaseStoreError::new(
            LeaseStoreErrorKind::Malformed,
            format!("lease table {table}: item {key}: attribute `{attr}` should be {expected}, found {}", found(value)),
        )
    };
    let counter = |attr: &str, required: bool| -> Result<u64, LeaseStoreError> {
        match item.get(attr) {
            None if !required => Ok(0),
            Some(AttributeValue::N(n)) => {
                n.parse::<u64>().map_err(|_| bad(attr, "a whole number of 0 to 2^64-1", item.get(attr)))
            }
            other => Err(bad(attr, "a number (N)", other)),
        }
    };
    let checkpoint = |attr: &str, value: Option<&AttributeValue>| -> Result<Option<Checkpoint>, LeaseStoreError> {
        match value {
            None => Ok(None),
            Some(AttributeValue::S(s)) => Checkpoint::parse_store_string(s)
                .map(Some)
                .map_err(|e| bad(attr, &format!("a sequence number, TRIM_HORIZON, LATEST or SHARD_END ({e})"), value)),
            other => Err(bad(attr, "a string (S)", other)),
        }
    };
    let shard_set = |attr: &str| -> Result<Vec<ShardId>, LeaseStoreError> {
        match item.get(attr) {
            None => Ok(Vec::new()),
            Some(AttributeValue::Ss(ids)) => Ok(ids.iter().map(ShardId::new).collect()),
            // Tolerate a single shard id written as a plain string.
            Some(AttributeValue::S(id)) => Ok(vec![ShardId::new(id)]),
            other => Err(bad(attr, "a string set (SS) of shard ids", other)),
        }
    };
    let owner = match item.get(a::LEASE_OWNER) {
        None | Some(AttributeValue::Null(true)) => None,
        Some(AttributeValue::S(owner)) => Some(WorkerId::new(owner)),
        other => return Err(bad(a::LEASE_OWNER, "a string (S)", other)),
    };
    let Some(current) = checkpoint(a::CHECKPOINT, item.get(a::CHECKPOINT))? else {
        return Err(bad(a::CHECKPOINT, "a string (S)", None));
    };
    let window = match (item.get(a::WINDOW_START), item.get(a::WINDOW_STATE)) {
        (None, None) => None,
        (None, Some(_)) => return Err(bad(a::WINDOW_START, "a number (N) beside the window state", None)),
        (Some(_), state) => {
            let millis = |attr: &str| counter(attr, true).map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
            let state = match state {
                None => Vec::new(),
                Some(AttributeValue::B(b)) => b.clone().into_inner(),
                other => return Err(bad(a::WINDOW_STATE, "binary data (B)", other)),
            };
            Some(Box::new(WindowState::new(millis(a::WINDOW_START)?, millis(a::WINDOW_END)?, state)))
        }
    };
    Ok(Lease {
        key: LeaseKey::from_raw(&key),
        owner,
        counter: counter(a::LEASE_COUNTER, true)?,
        checkpoint: current,
        pending_checkpoint: checkpoint(a::PENDING_CHECKPOINT, item.get(a::PENDING_CHECKPOINT))?,
        parent_shard_ids: shard_set(a::PARENT_SHARD_ID)?,
        child_shard_ids: shard_set(a::CHILD_SHARD_IDS)?,
        owner_switches_since_checkpoint: counter(a::OWNER_SWITCHES_SINCE_CHECKPOINT, false)?,
        handoff_requests: handoff_requests(table, &key, item)?,
        window,
    })
}

/// The handoff requests on a heartbeat item, sorted.
fn handoff_requests(
    table: &str,
    key: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<Vec<HandoffRequest>, LeaseStoreError> {
    let mut out = Vec::new();
    for (name, value) in item {
        let Some(from) = name.strip_prefix(a::HANDOFF_REQUEST_PREFIX) else { continue };
        let leases = match value {
            AttributeValue::N(n) => n.parse::<u32>().ok(),
            _ => None,
        };
        let Some(leases) = leases else {
            return Err(LeaseStoreError::new(
                LeaseStoreErrorKind::Malformed,
                format!(
                    "lease table {table}: item {key}: attribute `{name}` should be a count of leases (N), found {}",
                    found(Some(value))
                ),
            ));
        };
        out.push(HandoffRequest::new(WorkerId::new(from), leases));
    }
    out.sort();
    Ok(out)
}

/// Describes a found attribute for error messages, without dumping large values.
fn found(value: Option<&AttributeValue>) -> String {
    match value {
        None => "nothing (the attribute is missing)".to_owned(),
        Some(AttributeValue::S(s)) => format!("the string {s:?}"),
        Some(AttributeValue::N(n)) => format!("the number {n}"),
        Some(AttributeValue::Ss(_)) => "a string set".to_owned(),
        Some(AttributeValue::Ns(_)) => "a number set".to_owned(),
        Some(AttributeValue::Bool(b)) => format!("the boolean {b}"),
        Some(AttributeValue::Null(_)) => "NULL".to_owned(),
        Some(AttributeValue::M(_)) => "a map".to_owned(),
        Some(AttributeValue::L(_)) => "a list".to_owned(),
        Some(AttributeValue::B(_) | AttributeValue::Bs(_)) => "binary data".to_owned(),
        Some(_) => "a value of an unknown type".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcl_core::SequenceNumber;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_owned())
    }

    fn kcl_item() -> HashMap<String, AttributeValue> {
        HashMap::from([
            (a::LEASE_KEY.to_owned(), s("shardId-00000001795571920302-4c69a623")),
            (a::LEASE_OWNER.to_owned(), s("kcl-worker-1")),
            (a::LEASE_COUNTER.to_owned(), AttributeValue::N("17".into())),
            (a::CHECKPOINT.to_owned(), s("000000000000000000042")),
            (a::CHECKPOINT_SUB_SEQUENCE_NUMBER.to_owned(), AttributeValue::N("0".into())),
            (a::OWNER_SWITCHES_SINCE_CHECKPOINT.to_owned(), AttributeValue::N("1".into())),
            (a::PARENT_SHARD_ID.to_owned(), AttributeValue::Ss(vec!["shardId-00000001795571900000-00000001".into()])),
        ])
    }

    #[test]
    fn reads_a_kcl_item() {
        let lease = from_item("t", &kcl_item()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lease.owner, Some(WorkerId::new("kcl-worker-1")));
        assert_eq!(lease.counter, 17);
        assert_eq!(lease.checkpoint.sequence_number().map(SequenceNumber::as_str), Some("000000000000000000042"));
        assert_eq!(lease.parent_shard_ids, vec![ShardId::new("shardId-00000001795571900000-00000001")]);
        assert_eq!(lease.owner_switches_since_checkpoint, 1);
        assert_eq!(lease.pending_checkpoint, None);
    }

    #[test]
    fn round_trips_and_omits_empty_sets() {
        let mut lease = from_item("t", &kcl_item()).unwrap_or_else(|e| panic!("{e}"));
        lease.pending_checkpoint = Some(Checkpoint::ShardEnd);
        lease.handoff_requests =
            vec![HandoffRequest::new(WorkerId::new("w-a"), 3), HandoffRequest::new(WorkerId::new("w-b"), 1)];
        assert_eq!(from_item("t", &to_item(&lease)).ok(), Some(lease.clone()));
        lease.handoff_requests.clear();
        assert!(!to_item(&lease).keys().any(|k| k.starts_with(a::HANDOFF_REQUEST_PREFIX)));
        let mut bad = to_item(&lease);
        bad.insert(request_attribute(&WorkerId::new("w-c")), s("many"));
        assert!(from_item("t", &bad).is_err_and(|e| e.to_string().contains("`handoffRequest:w-c`")));
        lease.parent_shard_ids.clear();
        lease.owner = None;
        let item = to_item(&lease);
        assert!(!item.contains_key(a::PARENT_SHARD_ID) && !item.contains_key(a::CHILD_SHARD_IDS));
        assert!(!item.contains_key(a::LEASE_OWNER));
        assert_eq!(item.get(a::CHECKPOINT_SUB_SEQUENCE_NUMBER), Some(&AttributeValue::N("0".into())));
    }

    #[test]
    fn malformed_items_name_the_key_and_attribute() {
        let cases: [(&str, Option<AttributeValue>, &str); 6] = [
            (a::LEASE_COUNTER, Some(s("seven")), "`leaseCounter` should be a number"),
            (a::LEASE_COUNTER, Some(AttributeValue::N("-1".into())), "`leaseCounter` should be a whole number"),
            (a::LEASE_COUNTER, None, "`leaseCounter` should be a number (N), found nothing"),
            (a::CHECKPOINT, Some(s("AT_TIMESTAMP")), "`checkpoint` should be a sequence number"),
            (a::LEASE_OWNER, Some(AttributeValue::N("1".into())), "`leaseOwner` should be a string"),
            (a::PARENT_SHARD_ID, Some(AttributeValue::N("1".into())), "`parentShardId` should be a string set"),
        ];
        for (attr, value, want) in cases {
            let mut item = kcl_item();
            match value {
                Some(v) => item.insert(attr.to_owned(), v),
                None => item.remove(attr),
            };
            let err = match from_item("leases", &item) {
                Err(e) => e,
                Ok(l) => panic!("{attr}: read {l:?}"),
            };
            assert_eq!(err.kind(), LeaseStoreErrorKind::Malformed);
            let msg = err.to_string();
            assert!(msg.contains("leases") && msg.contains("shardId-00000001795571920302-4c69a623"), "{msg}");
            assert!(msg.contains(want), "{msg} should contain {want}");
        }
        let mut no_key = kcl_item();
        no_key.remove(a::LEASE_KEY);
        assert!(from_item("leases", &no_key).is_err_and(|e| e.to_string().contains("`leaseKey`")));
    }
}
