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
