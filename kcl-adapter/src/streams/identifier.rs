//! The name of a stream in a multi-stream lease table, as the Java DynamoDB Streams Kinesis
//! adapter writes it, so that several tables in one fleet keep that adapter's lease keys
//! (`{identifier}:{shardId}`; see [`kcl_core::MultiStream`]).

/// The Java DynamoDB Streams Kinesis adapter's multi-stream identifier of the stream
/// `arn:{partition}:dynamodb:{region}:{account}:table/{table}/stream/{label}`:
/// `{account}:{region}${account}${table}${label}:1`, with every `:` of the label (a
/// timestamp) written as `_`. `None` when `stream_arn` is not a DynamoDB stream ARN.
///
/// ```
/// let arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/orders/stream/2026-12-03T10:00:00.000";
/// assert_eq!(
///     kcl_adapter::streams::kcl_stream_identifier(arn).as_deref(),
///     Some("123456789012:eu-west-1$123456789012$orders$2026-12-03T10_00_00.000:1"),
/// );
/// ```
pub fn kcl_stream_identifier(stream_arn: &str) -> Option<String> {
    let mut parts = stream_arn.splitn(6, ':');
    let (arn, _partition, service) = (parts.next()?, parts.next()?, parts.next()?);
    let (region, account, resource) = (parts.next()?, parts.next()?, parts.next()?);
    if arn != "arn" || service != "dynamodb" || region.is_empty() || account.is_empty() {
        return None;
    }
    let rest = resource.strip_prefix("table/")?;
    let (table, label) = rest.split_once("/stream/")?;
    if table.is_empty() || label.is_empty() || table.contains('/') {
        return None;
    }
    Some(format!("{account}:{region}${account}${table}${}:1", label.replace(':', "_")))
}

#[cfg(test)]
mod tests {
    use super::kcl_stream_identifier;

    #[test]
    fn identifiers_of_stream_arns() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "arn:aws:dynamodb:us-east-1:111122223333:table/T/stream/2024-02-03T04:05:06.789",
                Some("111122223333:us-east-1$111122223333$T$2024-02-03T04_05_06.789:1"),
            ),
            ("arn:aws-cn:dynamodb:cn-north-1:1:table/a.b-c_d/stream/x", Some("1:cn-north-1$1$a.b-c_d$x:1")),
            (
                "arn:aws:dynamodb:ddblocal:000000000000:table/orders/stream/2026-12-04T03:00:00.123",
                Some("000000000000:ddblocal$000000000000$orders$2026-12-04T03_00_00.123:1"),
            ),
            ("arn:aws:dynamodb:us-east-1:1:table/T", None),
            ("arn:aws:kinesis:us-east-1:1:stream/T", None),
            ("arn:aws:dynamodb::1:table/T/stream/x", None),
            ("orders", None),
            ("arn:aws:dynamodb:us-east-1:1:table//stream/x", None),
        ];
        for (arn, expected) in cases {
            assert_eq!(kcl_stream_identifier(arn).as_deref(), *expected, "{arn}");
        }
    }
}
