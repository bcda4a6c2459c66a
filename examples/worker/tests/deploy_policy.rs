//! The IAM policy files hold exactly the statements a test justifies (tests/common/iam.rs):
//! `deploy/iam-policy.json` and the ECS template's task role agree, every statement is one the
//! real-process tests exercise, and each grants on an exact ARN, never `*`. Which actions each
//! statement may grant is judged by those tests against the operations the worker called
//! (fleet_processes, replicate).

mod common;

use std::collections::BTreeSet;

use common::iam::{NOT_IN_TEMPLATE, Resource, STATEMENTS, Statement, deploy_policies, resource_kind};

fn sids(statements: &[Statement]) -> BTreeSet<&str> {
    statements.iter().map(|s| s.sid.as_str()).collect()
}

/// A statement's grants as (action, resource kind), comparable across the two files.
fn grants(statement: &Statement) -> BTreeSet<(String, Resource)> {
    statement
        .actions
        .iter()
        .flat_map(|a| statement.resources.iter().map(move |r| (a.clone(), resource_kind(r))))
        .collect()
}

#[test]
fn every_statement_is_exercised_by_a_test_and_narrow() {
    let (json, template) = deploy_policies();
    let known: BTreeSet<&str> = STATEMENTS.iter().map(|(sid, _)| *sid).collect();
    assert_eq!(sids(&json), known, "deploy/iam-policy.json: statements no test exercises, or missing ones");
    let in_template: BTreeSet<&str> = known.iter().copied().filter(|s| !NOT_IN_TEMPLATE.contains(s)).collect();
    assert_eq!(sids(&template), in_template, "deploy/ecs-service.yaml TaskRole: statements differ");
    for (file, statements) in [("iam-policy.json", &json), ("ecs-service.yaml", &template)] {
        for s in statements.iter() {
            assert!(!s.actions.is_empty() && !s.resources.is_empty(), "{file}: {} grants nothing: {s:?}", s.sid);
            for r in &s.resources {
                assert!(!matches!(resource_kind(r), Resource::Other(_)), "{file}: {} grants on {r}", s.sid);
            }
        }
    }
    for t in &template {
        let Some(j) = json.iter().find(|j| j.sid == t.sid) else { continue };
        assert_eq!(grants(t), grants(j), "statement {}: the template's task role and iam-policy.json differ", t.sid);
    }
    for (sid, test) in STATEMENTS {
        println!("deploy policy: {sid} is exercised by {test}");
    }
}

/// The block of the template's resource `name` (its lines, up to the next resource).
fn resource_block<'a>(template: &'a str, name: &str) -> &'a str {
    let start = template.find(&format!("\n  {name}:\n")).unwrap_or_else(|| panic!("ecs-service.yaml: no {name}"));
    let block = &template[start + 1..];
    let end =
        block.lines().skip(1).position(|l| l.starts_with("  ") && !l.starts_with("   ") || l.starts_with("Outputs:"));
    let len = end.map_or(block.len(), |n| block.lines().take(n + 1).map(|l| l.len() + 1).sum());
    &block[..len.min(block.len())]
}

/// The stack owns the lease table with the key the worker checks at start, on demand, with
/// point-in-time recovery and deletion protection, kept when the stack goes; the workers do
/// not create it, and their role reaches exactly that table.
#[test]
fn the_stack_owns_the_lease_table() {
    let template = std::fs::read_to_string(common::iam::deploy_dir().join("ecs-service.yaml"))
        .unwrap_or_else(|e| panic!("ecs-service.yaml: {e}"));
    let table = resource_block(&template, "LeaseTable");
    let lines: Vec<&str> = table.lines().map(str::trim).collect();
    for want in [
        "Type: AWS::DynamoDB::Table",
        "DeletionPolicy: Retain",
        "UpdateReplacePolicy: Retain",
        "TableName: !Ref ApplicationName",
        "- AttributeName: leaseKey",
        "AttributeType: S",
        "KeyType: HASH",
        "BillingMode: PAY_PER_REQUEST",
        "PointInTimeRecoveryEnabled: true",
        "DeletionProtectionEnabled: true",
    ] {
        assert!(lines.contains(&want), "LeaseTable lacks {want:?}:\n{table}");
    }
    assert_eq!(lines.iter().filter(|l| l.starts_with("- AttributeName:")).count(), 2, "one key attribute:\n{table}");
    let task = resource_block(&template, "TaskDefinition");
    let env: Vec<&str> = task.lines().map(str::trim).collect();
    let at = env.iter().position(|l| *l == "- Name: KCL_CREATE_LEASE_TABLE");
    assert_eq!(at.map(|i| env[i + 1]), Some("Value: \"false\""), "the workers must not create the table:\n{task}");
    let role = resource_block(&template, "TaskRole");
    assert!(role.contains("Resource: !GetAtt LeaseTable.Arn"), "the role names the stack's table:\n{role}");
    assert!(!role.contains("dynamodb:CreateTable"), "the role may not create tables:\n{role}");
}
