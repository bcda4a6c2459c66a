//! The streams a worker (or `kcl-admin`) is given with `--table` and `--stream-arn`, opened as
//! one source: one stream as it is (plain shard ids as lease keys, Java KCL's single-stream
//! layout), several as a [`MultiStream`] keyed `{identifier}:{shardId}` with the Java DynamoDB
//! Streams adapter's multi-stream identifier of each ([`kcl_stream_identifier`]). Also the
//! AWS configuration both binaries load ([`sdk_config`]).

use aws_config::{BehaviorVersion, Region};
use kcl_adapter::DynamoStreamsSource;
use kcl_adapter::streams::kcl_stream_identifier;
use kcl_core::{MultiStream, SourceError};

/// The opened streams.
#[derive(Debug)]
pub enum Streams {
    /// One stream.
    One(DynamoStreamsSource),
    /// Several, with each one's identifier (its lease keys' prefix) and ARN, in order.
    Several(MultiStream<DynamoStreamsSource>, Vec<(String, String)>),
}

/// Why the streams cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamsError {
    /// No table and no stream ARN.
    #[error("give the source with --table or --stream-arn")]
    None,
    /// A table's stream could not be found.
    #[error(transparent)]
    Stream(#[from] SourceError),
    /// A stream ARN that is not a DynamoDB stream's.
    #[error("{0} is not a DynamoDB stream ARN (arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL)")]
    BadArn(String),
    /// The same stream twice.
    #[error(transparent)]
    Names(#[from] kcl_core::MultiStreamError),
}

impl Streams {
    /// Opens `tables` (their latest streams, found with `DescribeTable`) and `arns`, in that
    /// order.
    pub async fn open(
        dynamodb: &aws_sdk_dynamodb::Client,
        streams: &aws_sdk_dynamodbstreams::Client,
        tables: &[String],
        arns: &[String],
    ) -> Result<Self, StreamsError> {
        let mut sources = Vec::new();
        for table in tables {
            sources.push(DynamoStreamsSource::from_table(dynamodb, streams.clone(), table).await?);
        }
        sources.extend(arns.iter().map(|arn| DynamoStreamsSource::from_stream_arn(streams.clone(), arn)));
        match <[DynamoStreamsSource; 1]>::try_from(sources) {
            Ok([source]) => Ok(Streams::One(source)),
            Err(sources) if sources.is_empty() => Err(StreamsError::None),
            Err(sources) => {
                let mut named = Vec::new();
                let mut described = Vec::new();
                for source in sources {
                    let arn = source.stream_arn().to_owned();
                    let name = kcl_stream_identifier(&arn).ok_or_else(|| StreamsError::BadArn(arn.clone()))?;
                    described.push((name.clone(), arn));
                    named.push((name, source));
                }
                Ok(Streams::Several(MultiStream::new(named)?, described))
            }
        }
    }

    /// The ARNs, in order.
    pub fn arns(&self) -> Vec<&str> {
        match self {
            Streams::One(source) => vec![source.stream_arn()],
            Streams::Several(_, described) => described.iter().map(|(_, arn)| arn.as_str()).collect(),
        }
    }
}

/// The AWS configuration from the default chain, with `--region` and `--endpoint-url` (both
/// DynamoDB and DynamoDB Streams: DynamoDB Local) applied. Fails when no region is configured.
pub async fn sdk_config(region: Option<&str>, endpoint: Option<&str>) -> Result<aws_config::SdkConfig, String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err("no AWS region is configured: set AWS_REGION (or pass --region)".to_owned());
    }
    Ok(sdk)
}
