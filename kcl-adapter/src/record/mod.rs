//! [`ChangeRecord`]: one change of a DynamoDB item, as processors receive it.
//!
//! The streams API has its own `AttributeValue` type; this module converts keys and images to
//! the DynamoDB API's [`AttributeValue`], the one users write back to tables. Keys and images
//! decode into the user's own serde types with [`ChangeRecord::keys_as`],
//! [`ChangeRecord::new_image_as`] and [`ChangeRecord::old_image_as`]; a failure names the
//! record and the attribute that did not fit.

mod event;
mod names;

pub use names::{ChangeKind, DYNAMODB_SERVICE_PRINCIPAL, EventName, StreamViewType, UserIdentity};

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_dynamodbstreams::types as streams;
use kcl_core::{SequenceNumber, StreamRecord};
use serde::de::DeserializeOwned;

pub use aws_sdk_dynamodb::types::AttributeValue;

/// An item, a key or an image: attribute name to value.
pub type Item = HashMap<String, AttributeValue>;

/// One change of one item, read from a DynamoDB stream.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeRecord {
    event_id: String,
    event_name: EventName,
    keys: Item,
    old_image: Option<Item>,
    new_image: Option<Item>,
    sequence_number: SequenceNumber,
    approximate_creation_time: Option<SystemTime>,
    size_bytes: Option<u64>,
    stream_view_type: Option<StreamViewType>,
    user_identity: Option<UserIdentity>,
    partition_key: String,
}

impl ChangeRecord {
    /// A record with the given identity and keys and nothing else; add the rest with the
    /// `with_*` methods. Meant for tests of processors; the source builds records itself.
    pub fn new(
        event_id: impl Into<String>,
        event_name: EventName,
        keys: Item,
        sequence_number: SequenceNumber,
    ) -> Self {
        let partition_key = render_keys(&keys);
        Self {
            event_id: event_id.into(),
            event_name,
            keys,
            old_image: None,
            new_image: None,
            sequence_number,
            approximate_creation_time: None,
            size_bytes: None,
            stream_view_type: None,
            user_identity: None,
            partition_key,
        }
    }

    /// Sets the image after the change.
    pub fn with_new_image(mut self, image: Item) -> Self {
        self.new_image = Some(image);
        self
    }

    /// Sets the image before the change.
    pub fn with_old_image(mut self, image: Item) -> Self {
        self.old_image = Some(image);
        self
    }

    /// Sets the approximate creation time.
    pub fn with_approximate_creation_time(mut self, time: SystemTime) -> Self {
        self.approximate_creation_time = Some(time);
        self
    }

    /// Sets the size in bytes.
    pub fn with_size_bytes(mut self, size: u64) -> Self {
        self.size_bytes = Some(size);
        self
    }

    /// Sets the stream view type.
    pub fn with_stream_view_type(mut self, view: StreamViewType) -> Self {
        self.stream_view_type = Some(view);
        self
    }

    /// Sets the user identity.
    pub fn with_user_identity(mut self, identity: UserIdentity) -> Self {
        self.user_identity = Some(identity);
        self
    }

    /// The record's unique id (`eventID`).
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// What happened, as the stream named it, unknown names included.
    pub fn event_name(&self) -> &EventName {
        &self.event_name
    }

    /// What happened, as one of the three documented kinds; an error naming the record and
    /// the name for any other event name (DynamoDB Local's `UNKNOWN_TO_SDK_VERSION` for TTL
    /// deletions). Match on [`ChangeRecord::event_name`] to handle those yourself.
    pub fn change_kind(&self) -> Result<ChangeKind, DecodeError> {
        match &self.event_name {
            EventName::Insert => Ok(ChangeKind::Insert),
            EventName::Modify => Ok(ChangeKind::Modify),
            EventName::Remove => Ok(ChangeKind::Remove),
            EventName::Unknown(name) => Err(DecodeError {
                kind: DecodeErrorKind::EventName,
                event_id: self.event_id.clone(),
                field: None,
                message: format!(
                    "{}: event name {name:?} is not INSERT, MODIFY or REMOVE (DynamoDB Local sends \
                     UNKNOWN_TO_SDK_VERSION for TTL deletions); match on event_name() to handle it",
                    self.describe()
                ),
                source: None,
            }),
        }
    }

    /// The item's primary key attributes.
    pub fn keys(&self) -> &Item {
        &self.keys
    }

    /// The item before the change (MODIFY and REMOVE, with an OLD_IMAGE or NEW_AND_OLD_IMAGES
    /// stream).
    pub fn old_image(&self) -> Option<&Item> {
        self.old_image.as_ref()
    }

    /// The item after the change (INSERT and MODIFY, with a NEW_IMAGE or NEW_AND_OLD_IMAGES
    /// stream).
    pub fn new_image(&self) -> Option<&Item> {
        self.new_image.as_ref()
    }

    /// The record's position in its shard, exactly as the stream sent it.
    pub fn sequence_number(&self) -> &SequenceNumber {
        &self.sequence_number
    }

    /// When the change happened, approximately (AWS: to the second; DynamoDB Local: to the
    /// minute).
    pub fn approximate_creation_time(&self) -> Option<SystemTime> {
        self.approximate_creation_time
    }

    /// The size of the stream record in bytes.
    pub fn size_bytes(&self) -> Option<u64> {
        self.size_bytes
    }

    /// Which images the stream carries.
    pub fn stream_view_type(&self) -> Option<&StreamViewType> {
        self.stream_view_type.as_ref()
    }

    /// Who made the change, when DynamoDB made it itself.
    pub fn user_identity(&self) -> Option<&UserIdentity> {
        self.user_identity.as_ref()
    }

    /// True when DynamoDB deleted the item because its TTL expired: the user identity is type
    /// `Service`, principal `dynamodb.amazonaws.com`. (DynamoDB Local sends no identity, so
    /// this is always false there.)
    pub fn is_ttl_delete(&self) -> bool {
        self.user_identity
            .as_ref()
            .is_some_and(|id| id.identity_type == "Service" && id.principal_id == DYNAMODB_SERVICE_PRINCIPAL)
    }

    /// The keys rendered as sorted `name=value` pairs joined by `,` (values with `%`, `,` or
    /// `=` percent-encoded; binary values in hex): stable, and the same for every change of
    /// one item.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// Decodes the keys into `T`.
    pub fn keys_as<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        self.decode(DecodeErrorKind::Keys, &self.keys)
    }

    /// Decodes the image after the change into `T`; `Ok(None)` when the record has none.
    pub fn new_image_as<T: DeserializeOwned>(&self) -> Result<Option<T>, DecodeError> {
        self.new_image.as_ref().map(|image| self.decode(DecodeErrorKind::NewImage, image)).transpose()
    }

    /// Decodes the image before the change into `T`; `Ok(None)` when the record has none.
    pub fn old_image_as<T: DeserializeOwned>(&self) -> Result<Option<T>, DecodeError> {
        self.old_image.as_ref().map(|image| self.decode(DecodeErrorKind::OldImage, image)).transpose()
    }

    fn decode<T: DeserializeOwned>(&self, kind: DecodeErrorKind, item: &Item) -> Result<T, DecodeError> {
        let item: HashMap<String, serde_dynamo::AttributeValue> = serde_dynamo::Item::from(item.clone()).into();
        let deserializer = serde_dynamo::Deserializer::from_attribute_value(serde_dynamo::AttributeValue::M(item));
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let field = (path != ".").then_some(path);
            let inner = e.inner().to_string();
            let at = field.as_deref().map(|f| format!(" at attribute `{f}`")).unwrap_or_default();
            DecodeError {
                message: format!(
                    "{}: cannot decode its {} into `{}`{at}: {inner}",
                    self.describe(),
                    kind.as_str(),
                    std::any::type_name::<T>()
                ),
                kind,
                event_id: self.event_id.clone(),
                field,
                source: Some(Box::new(e.into_inner())),
            }
        })
    }

    fn describe(&self) -> String {
        format!("record {} ({} at sequence number {})", self.event_id, self.event_name, self.sequence_number)
    }

    /// Converts a record from the streams API; the error says why a record cannot be placed
    /// in its shard (no sequence number, or an invalid one).
    pub(crate) fn from_sdk(record: streams::Record) -> Result<Self, String> {
        let event_id = record.event_id.unwrap_or_default();
        let malformed = |what: &str| format!("record {event_id:?} has {what}; cannot place it in its shard");
        let Some(change) = record.dynamodb else { return Err(malformed("no `dynamodb` section")) };
        let Some(seq) = change.sequence_number else { return Err(malformed("no dynamodb.SequenceNumber")) };
        let sequence_number =
            SequenceNumber::parse(&seq).map_err(|e| malformed(&format!("an invalid sequence number ({e})")))?;
        let event_name =
            record.event_name.as_ref().map_or(EventName::Unknown(String::new()), |n| EventName::parse(n.as_str()));
        let mut converted =
            ChangeRecord::new(event_id, event_name, convert_item(change.keys.unwrap_or_default()), sequence_number);
        converted.new_image = change.new_image.map(convert_item);
        converted.old_image = change.old_image.map(convert_item);
        converted.approximate_creation_time =
            change.approximate_creation_date_time.and_then(|t| SystemTime::try_from(t).ok());
        converted.size_bytes = change.size_bytes.and_then(|s| u64::try_from(s).ok());
        converted.stream_view_type = change.stream_view_type.map(|v| StreamViewType::parse(v.as_str()));
        converted.user_identity = record.user_identity.map(|id| UserIdentity {
            identity_type: id.r#type.unwrap_or_default(),
            principal_id: id.principal_id.unwrap_or_default(),
        });
        Ok(converted)
    }
}

impl StreamRecord for ChangeRecord {
    fn sequence_number(&self) -> &SequenceNumber {
        &self.sequence_number
    }

    fn approximate_creation_time(&self) -> Option<SystemTime> {
        self.approximate_creation_time
    }

    fn partition_key(&self) -> &str {
        &self.partition_key
    }

    fn to_filter_event(&self) -> serde_json::Value {
        event::filter_event(self)
    }
}

/// Which part of a record failed to decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The keys.
    Keys,
    /// The image after the change.
    NewImage,
    /// The image before the change.
    OldImage,
    /// The event name is none of INSERT, MODIFY, REMOVE.
    EventName,
}

impl DecodeErrorKind {
    /// A short label (`keys`, `new image`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeErrorKind::Keys => "keys",
            DecodeErrorKind::NewImage => "new image",
            DecodeErrorKind::OldImage => "old image",
            DecodeErrorKind::EventName => "event name",
        }
    }
}

/// A record's keys or image did not fit the requested type, or its event name is unknown.
///
/// The message names the record (event id, event name, sequence number), the part, the target
/// type and, when known, the attribute path (for example `address.zip`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    kind: DecodeErrorKind,
    event_id: String,
    field: Option<String>,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl DecodeError {
    /// Which part failed.
    pub fn kind(&self) -> DecodeErrorKind {
        self.kind
    }

    /// The id of the record that failed.
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// The path of the attribute that did not fit (`age`, `address.zip`, `tags[2]`), when the
    /// failure is inside one; `None` for failures of the whole item (a missing field names
    /// itself in the message).
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

/// Converts the streams API's item to the DynamoDB API's.
fn convert_item(item: HashMap<String, streams::AttributeValue>) -> Item {
    item.into_iter().map(|(name, value)| (name, convert_value(value))).collect()
}

fn convert_value(value: streams::AttributeValue) -> AttributeValue {
    use streams::AttributeValue as S;
    match value {
        S::S(s) => AttributeValue::S(s),
        S::N(n) => AttributeValue::N(n),
        S::B(b) => AttributeValue::B(b),
        S::Ss(ss) => AttributeValue::Ss(ss),
        S::Ns(ns) => AttributeValue::Ns(ns),
        S::Bs(bs) => AttributeValue::Bs(bs),
        S::M(m) => AttributeValue::M(convert_item(m)),
        S::L(l) => AttributeValue::L(l.into_iter().map(convert_value).collect()),
        S::Null(null) => AttributeValue::Null(null),
        S::Bool(b) => AttributeValue::Bool(b),
        // A type newer than this SDK: nothing to convert it to. Keep the attribute present.
        other => {
            tracing::warn!(value = ?other, "stream record holds an attribute type unknown to this SDK; read as NULL");
            AttributeValue::Null(true)
        }
    }
}

/// Sorted `name=value` pairs joined by `,`; see [`ChangeRecord::partition_key`].
fn render_keys(keys: &Item) -> String {
    let mut names: Vec<&String> = keys.keys().collect();
    names.sort();
    let mut out = String::new();
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape_into(&mut out, name);
        out.push('=');
        match &keys[name] {
            AttributeValue::S(s) => escape_into(&mut out, s),
            AttributeValue::N(n) => out.push_str(n),
            AttributeValue::B(b) => b.as_ref().iter().for_each(|byte| out.push_str(&format!("{byte:02x}"))),
            other => escape_into(&mut out, &format!("{other:?}")),
        }
    }
    out
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            ',' => out.push_str("%2C"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::primitives::Blob;
    use serde::Deserialize;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_owned())
    }

    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(v.to_owned())
    }

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn seq(digits: &str) -> SequenceNumber {
        SequenceNumber::parse(digits).unwrap_or_else(|e| panic!("{e}"))
    }

    fn record(name: EventName) -> ChangeRecord {
        ChangeRecord::new("ev-1", name, item(&[("pk", s("user#1"))]), seq("000000000000000000007"))
    }

    #[test]
    fn partition_keys_are_sorted_escaped_and_typed() {
        let cases = [
            (item(&[("pk", s("k0"))]), "pk=k0"),
            (item(&[("sk", n("42")), ("pk", s("a"))]), "pk=a,sk=42"),
            (item(&[("pk", s("a,sk=b")), ("sk", s("c"))]), "pk=a%2Csk%3Db,sk=c"),
            (item(&[("pk", s("a")), ("sk", s("b,sk=c"))]), "pk=a,sk=b%2Csk%3Dc"),
            (item(&[("pk", s("100%"))]), "pk=100%25"),
            (item(&[("id", AttributeValue::B(Blob::new(vec![0x00, 0xab])))]), "id=00ab"),
        ];
        for (keys, want) in cases {
            assert_eq!(render_keys(&keys), want, "{keys:?}");
        }
    }

    #[test]
    fn event_names_round_trip_and_keep_unknown_ones() {
        for name in ["INSERT", "MODIFY", "REMOVE", "UNKNOWN_TO_SDK_VERSION", ""] {
            assert_eq!(EventName::parse(name).as_str(), name);
        }
        assert_eq!(EventName::parse("UNKNOWN_TO_SDK_VERSION"), EventName::Unknown("UNKNOWN_TO_SDK_VERSION".into()));
        assert_eq!(StreamViewType::parse("NEW_AND_OLD_IMAGES"), StreamViewType::NewAndOldImages);
        assert_eq!(StreamViewType::parse("KEYS_ONLY").as_str(), "KEYS_ONLY");
    }

    #[test]
    fn change_kind_errors_clearly_on_unknown_names() {
        assert_eq!(record(EventName::Remove).change_kind().ok(), Some(ChangeKind::Remove));
        let err = match record(EventName::parse("UNKNOWN_TO_SDK_VERSION")).change_kind() {
            Err(e) => e,
            Ok(kind) => panic!("unknown event name decoded as {kind:?}"),
        };
        assert_eq!(err.kind(), DecodeErrorKind::EventName);
        assert_eq!(err.event_id(), "ev-1");
        let msg = err.to_string();
        assert!(msg.contains("ev-1") && msg.contains("UNKNOWN_TO_SDK_VERSION") && msg.contains("TTL"), "{msg}");
    }

    #[test]
    fn ttl_delete_needs_the_service_identity() {
        let service = UserIdentity { identity_type: "Service".into(), principal_id: DYNAMODB_SERVICE_PRINCIPAL.into() };
        let other = UserIdentity { identity_type: "Service".into(), principal_id: "someone.else".into() };
        assert!(record(EventName::Remove).with_user_identity(service).is_ttl_delete());
        assert!(!record(EventName::Remove).with_user_identity(other).is_ttl_delete());
        assert!(!record(EventName::Remove).is_ttl_delete());
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct User {
        pk: String,
        age: u32,
        address: Address,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Address {
        zip: u32,
    }

    #[test]
    fn typed_decoding_and_errors_that_name_the_attribute() {
        let good =
            item(&[("pk", s("user#1")), ("age", n("42")), ("address", AttributeValue::M(item(&[("zip", n("1234"))])))]);
        let r = record(EventName::Insert).with_new_image(good);
        let user: Option<User> = r.new_image_as().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user, Some(User { pk: "user#1".into(), age: 42, address: Address { zip: 1234 } }));
        assert!(matches!(r.old_image_as::<User>(), Ok(None)));

        let cases = [
            (
                item(&[("pk", s("u")), ("age", s("old")), ("address", AttributeValue::M(item(&[("zip", n("1"))])))]),
                Some("age"),
            ),
            (
                item(&[("pk", s("u")), ("age", n("1")), ("address", AttributeValue::M(item(&[("zip", s("x"))])))]),
                Some("address.zip"),
            ),
            (
                item(&[("pk", s("u")), ("age", n("-1")), ("address", AttributeValue::M(item(&[("zip", n("1"))])))]),
                Some("age"),
            ),
            (item(&[("pk", s("u")), ("address", AttributeValue::M(item(&[("zip", n("1"))])))]), None),
        ];
        for (image, field) in cases {
            let r = record(EventName::Modify).with_old_image(image);
            let err = match r.old_image_as::<User>() {
                Err(e) => e,
                Ok(v) => panic!("decoded {v:?}"),
            };
            assert_eq!(err.kind(), DecodeErrorKind::OldImage);
            assert_eq!(err.field(), field);
            let msg = err.to_string();
            assert!(msg.contains("ev-1") && msg.contains("old image") && msg.contains("User"), "{msg}");
            match field {
                Some(f) => assert!(msg.contains(&format!("`{f}`")), "{msg}"),
                None => assert!(msg.contains("missing field `age`"), "{msg}"),
            }
        }
    }

    #[test]
    fn converts_sdk_records() {
        use streams::AttributeValue as S;
        let change = streams::StreamRecord::builder()
            .keys("pk", S::S("k0".into()))
            .new_image("pk", S::S("k0".into()))
            .new_image("tags", S::L(vec![S::N("1".into()), S::M(HashMap::from([("x".to_owned(), S::Bool(true))]))]))
            .sequence_number("000000000000000000001")
            .size_bytes(10)
            .stream_view_type(streams::StreamViewType::NewAndOldImages)
            .approximate_creation_date_time(aws_sdk_dynamodbstreams::primitives::DateTime::from_secs(1_795_571_880))
            .build();
        let sdk = streams::Record::builder()
            .event_id("e")
            .event_name(streams::OperationType::from("UNKNOWN_TO_SDK_VERSION"))
            .dynamodb(change)
            .build();
        let r = ChangeRecord::from_sdk(sdk).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.event_name(), &EventName::Unknown("UNKNOWN_TO_SDK_VERSION".into()));
        assert_eq!(r.partition_key(), "pk=k0");
        assert_eq!(r.sequence_number().as_str(), "000000000000000000001");
        assert_eq!(r.size_bytes(), Some(10));
        assert_eq!(r.stream_view_type(), Some(&StreamViewType::NewAndOldImages));
        let want_time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_571_880);
        assert_eq!(r.approximate_creation_time(), Some(want_time));
        let tags = r.new_image().and_then(|i| i.get("tags")).cloned();
        let want = AttributeValue::L(vec![n("1"), AttributeValue::M(item(&[("x", AttributeValue::Bool(true))]))]);
        assert_eq!(tags, Some(want));

        let missing = streams::Record::builder().event_id("e2").build();
        let err = match ChangeRecord::from_sdk(missing) {
            Err(e) => e,
            Ok(r) => panic!("converted {r:?}"),
        };
        assert!(err.contains("\"e2\"") && err.contains("no `dynamodb` section"), "{err}");
        let bad = streams::Record::builder()
            .event_id("e3")
            .dynamodb(streams::StreamRecord::builder().sequence_number("12x").build())
            .build();
        let err = ChangeRecord::from_sdk(bad).err().unwrap_or_else(|| panic!("converted a bad sequence number"));
        assert!(err.contains("\"e3\"") && err.contains("invalid sequence number") && err.contains("12x"), "{err}");
    }
}
