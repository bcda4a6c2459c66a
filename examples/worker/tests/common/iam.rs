//! Least privilege, checked: the IAM statements of `deploy/iam-policy.json` and of the ECS
//! template's task role (`deploy/ecs-service.yaml`) against the AWS operations worker
//! processes were seen calling through a counting proxy ([`super::proxy`]).
//!
//! An operation maps to its IAM action (`DynamoDB_20120810.GetItem` and
//! `DynamoDBStreams_20120810.GetRecords` to `dynamodb:GetItem` and `dynamodb:GetRecords`,
//! `AmazonSQS.SendMessage` to `sqs:SendMessage`) and to the resource it touched: the source
//! table's stream, the source table, the lease table, the replication target or the dead-letter
//! queue. Each statement must grant exactly what some test saw the worker call, on exactly the
//! ARN of that resource; [`STATEMENTS`] says which test exercises each statement.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::sniff::Request;

/// What an action is granted on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Resource {
    /// The source table's streams (`table/T/stream/*`).
    Stream,
    SourceTable,
    LeaseTable,
    TargetTable,
    DeadLetterQueue,
    /// Anything else: never the narrowest resource.
    Other(String),
}

/// The tables and queue of one run, to tell what each request touched.
#[derive(Clone, Debug, Default)]
pub(crate) struct Names {
    pub(crate) source: String,
    pub(crate) lease: String,
    pub(crate) target: Option<String>,
    pub(crate) queue_url: Option<String>,
}

/// Every statement the policy may hold, and the test whose recorded calls justify it.
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("ReadSourceStream", "fleet_processes (every jsonl worker of the fleet reads the stream)"),
    ("ResolveStreamFromTableName", "fleet_processes (the workers are given --table, not --stream-arn)"),
    ("LeaseTable", "fleet_processes (leases, heartbeats, checkpoints, clean-up of finished shards)"),
    ("CreateLeaseTableOptional", "fleet_processes (its first worker creates the lease table)"),
    ("ReplicateIntoTargetTable", "replicate::oversized_item_is_dead_lettered_with_its_reason (--processor replicate)"),
    ("DeadLetterQueue", "replicate::oversized_item_is_dead_lettered_with_its_reason (--dead-letter-queue-url, moto)"),
];

/// Statements the ECS template leaves out: it has no dead-letter queue setting, and the stack
/// creates the lease table itself (the workers run with `KCL_CREATE_LEASE_TABLE=false`).
pub(crate) const NOT_IN_TEMPLATE: &[&str] = &["DeadLetterQueue", "CreateLeaseTableOptional"];

/// One statement: its id, actions and resources (as written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Statement {
    pub(crate) sid: String,
    pub(crate) actions: BTreeSet<String>,
    pub(crate) resources: Vec<String>,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `deploy/` directory of the workspace.
pub(crate) fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The statements of an IAM policy document (JSON).
pub(crate) fn policy_statements(text: &str) -> Vec<Statement> {
    let doc: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("iam-policy.json: {e}"));
    let list = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        }
    };
    let statements = doc.get("Statement").and_then(Value::as_array).cloned().unwrap_or_default();
    statements
        .iter()
        .map(|s| {
            assert_eq!(s.get("Effect").and_then(Value::as_str), Some("Allow"), "a statement that is not Allow: {s}");
            Statement {
                sid: s.get("Sid").and_then(Value::as_str).unwrap_or_default().to_owned(),
                actions: list(s.get("Action")).into_iter().collect(),
                resources: list(s.get("Resource")),
            }
        })
        .collect()
}

/// The statements of the task role's inline policy in the ECS template (CloudFormation YAML,
/// read line by line: `Sid:`, `Action:` with its list items, `Resource:`).
pub(crate) fn template_statements(text: &str) -> Vec<Statement> {
    let start = text.find("\n  TaskRole:").unwrap_or_else(|| panic!("ecs-service.yaml: no TaskRole"));
    let block = &text[start + 1..];
    let body = block.find("PolicyDocument:").map_or("", |i| &block[i..]);
    let mut statements: Vec<Statement> = Vec::new();
    for line in body.lines().skip(1) {
        // The next resource of the template ends the role.
        if line.starts_with("  ") && !line.starts_with("   ") {
            break;
        }
        let item = line.trim().trim_start_matches("- ").trim();
        if let Some(sid) = item.strip_prefix("Sid:") {
            statements.push(Statement { sid: sid.trim().to_owned(), actions: BTreeSet::new(), resources: Vec::new() });
        } else if let Some(last) = statements.last_mut() {
            if let Some(resource) = item.strip_prefix("Resource:") {
                let resource = resource.trim().trim_start_matches("!Sub").trim().trim_matches('"');
                last.resources.push(resource.to_owned());
            } else if let Some(action) = item.strip_prefix("Action:").map(str::trim).filter(|a| !a.is_empty()) {
                last.actions.insert(action.to_owned());
            } else if item.starts_with("dynamodb:") || item.starts_with("sqs:") {
                last.actions.insert(item.to_owned());
            }
        }
    }
    statements
}

/// Both policies as the repository has them: (`iam-policy.json`, the template's task role).
pub(crate) fn deploy_policies() -> (Vec<Statement>, Vec<Statement>) {
    let dir = deploy_dir();
    (policy_statements(&read(&dir.join("iam-policy.json"))), template_statements(&read(&dir.join("ecs-service.yaml"))))
}

/// What a resource ARN of either file means. Only the exact ARNs count as narrow.
pub(crate) fn resource_kind(arn: &str) -> Resource {
    let table = |name: &str| {
        [
            format!("arn:aws:dynamodb:${{Region}}:${{Account}}:table/${{{name}}}"),
            format!("arn:${{AWS::Partition}}:dynamodb:${{AWS::Region}}:${{AWS::AccountId}}:table/${{{name}}}"),
        ]
    };
    let is = |name: &str, suffix: &str| table(name).iter().any(|t| format!("{t}{suffix}") == arn);
    if is("SourceTable", "/stream/*") {
        Resource::Stream
    } else if is("SourceTable", "") {
        Resource::SourceTable
    } else if is("LeaseTable", "") || is("ApplicationName", "") || arn == "!GetAtt LeaseTable.Arn" {
        Resource::LeaseTable
    } else if is("TargetTable", "") {
        Resource::TargetTable
    } else if arn == "arn:aws:sqs:${Region}:${Account}:${DeadLetterQueue}" {
        Resource::DeadLetterQueue
    } else {
        Resource::Other(arn.to_owned())
    }
}

/// The IAM action and resource of one recorded request.
pub(crate) fn grant_of(request: &Request, names: &Names) -> (String, Resource) {
    let (service, op) = request.target.split_once('.').unwrap_or(("", request.target.as_str()));
    let resource = request.resource.as_deref();
    match service {
        "DynamoDBStreams_20120810" => (format!("dynamodb:{op}"), Resource::Stream),
        "DynamoDB_20120810" => {
            let kind = match resource {
                Some(t) if t == names.source => Resource::SourceTable,
                Some(t) if t == names.lease => Resource::LeaseTable,
                Some(t) if names.target.as_deref() == Some(t) => Resource::TargetTable,
                other => Resource::Other(format!("table {other:?}")),
            };
            (format!("dynamodb:{op}"), kind)
        }
        "AmazonSQS" => {
            let kind = match resource {
                Some(url) if names.queue_url.as_deref() == Some(url) => Resource::DeadLetterQueue,
                other => Resource::Other(format!("queue {other:?}")),
            };
            (format!("sqs:{op}"), kind)
        }
        _ => (format!("(unknown) {}", request.target), Resource::Other(format!("{resource:?}"))),
    }
}

/// What `statements` grant: action → the resources it is granted on.
fn granted(statements: &[Statement]) -> BTreeMap<(String, Resource), Vec<String>> {
    let mut out: BTreeMap<(String, Resource), Vec<String>> = BTreeMap::new();
    for s in statements {
        for action in &s.actions {
            for r in &s.resources {
                out.entry((action.clone(), resource_kind(r))).or_default().push(s.sid.clone());
            }
        }
    }
    out
}

/// Judges `statements` (of `file`) against the calls a run saw. Every call must be granted on
/// its resource; the statements named in `justified` must grant nothing beyond what was called
/// on their resources. Returns the problems.
pub(crate) fn judge_policy(
    file: &str,
    statements: &[Statement],
    calls: &BTreeSet<(String, Resource)>,
    justified: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    let all = granted(statements);
    for call in calls {
        if !all.contains_key(call) {
            problems.push(format!("{file}: the worker calls {} on {:?}, which no statement grants", call.0, call.1));
        }
    }
    for sid in justified {
        let Some(statement) = statements.iter().find(|s| s.sid == *sid) else {
            problems.push(format!("{file}: no statement {sid}"));
            continue;
        };
        for ((action, resource), _) in granted(std::slice::from_ref(statement)) {
            if let Resource::Other(r) = &resource {
                problems.push(format!("{file}: {sid} grants {action} on {r}, not on the narrowest resource"));
            } else if !calls.contains(&(action.clone(), resource.clone())) {
                problems.push(format!("{file}: {sid} grants {action} on {resource:?}, which the worker never called"));
            }
        }
    }
    problems
}

/// [`judge_policy`] on both deploy files (the template without [`NOT_IN_TEMPLATE`]).
pub(crate) fn judge_deploy_policies(calls: &BTreeSet<(String, Resource)>, justified: &[&str]) -> Vec<String> {
    let (json, template) = deploy_policies();
    let mut problems = judge_policy("deploy/iam-policy.json", &json, calls, justified);
    let in_template: Vec<&str> = justified.iter().copied().filter(|s| !NOT_IN_TEMPLATE.contains(s)).collect();
    // Workers deployed with the template neither use a dead-letter queue nor create the lease
    // table (the stack does).
    let template_calls: BTreeSet<(String, Resource)> =
        calls.iter().filter(|(a, _)| !a.starts_with("sqs:") && a != "dynamodb:CreateTable").cloned().collect();
    problems.extend(judge_policy("deploy/ecs-service.yaml (TaskRole)", &template, &template_calls, &in_template));
    problems
}

/// The calls of a run, from the proxies' request counts.
pub(crate) fn calls_of<'a>(
    requests: impl IntoIterator<Item = &'a Request>,
    names: &Names,
) -> BTreeSet<(String, Resource)> {
    requests.into_iter().map(|r| grant_of(r, names)).collect()
}
