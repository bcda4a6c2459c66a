//! The vocabulary of a record: event names, change kinds, view types, user identity.

use std::fmt;

/// The principal DynamoDB puts in the user identity of changes it made itself (TTL deletions).
pub const DYNAMODB_SERVICE_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// What happened to the item, as the stream names it (`eventName`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventName {
    /// A new item was written.
    Insert,
    /// An existing item changed.
    Modify,
    /// An item was deleted (by a user, or by TTL: see [`ChangeRecord::is_ttl_delete`](super::ChangeRecord::is_ttl_delete)).
    Remove,
    /// A name this adapter does not know, kept as sent. DynamoDB Local sends
    /// `UNKNOWN_TO_SDK_VERSION` for TTL deletions; such records are delivered, not dropped.
    Unknown(String),
}

impl EventName {
    /// Parses the stream's spelling (`INSERT`, `MODIFY`, `REMOVE`).
    pub fn parse(name: &str) -> Self {
        match name {
            "INSERT" => EventName::Insert,
            "MODIFY" => EventName::Modify,
            "REMOVE" => EventName::Remove,
            other => EventName::Unknown(other.to_owned()),
        }
    }

    /// The stream's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            EventName::Insert => "INSERT",
            EventName::Modify => "MODIFY",
            EventName::Remove => "REMOVE",
            EventName::Unknown(name) => name,
        }
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three kinds of change DynamoDB documents; see [`ChangeRecord::change_kind`](super::ChangeRecord::change_kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// `INSERT`.
    Insert,
    /// `MODIFY`.
    Modify,
    /// `REMOVE`.
    Remove,
}

/// Which images the stream carries (`StreamViewType`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StreamViewType {
    /// Keys only, no images.
    KeysOnly,
    /// The item after the change.
    NewImage,
    /// The item before the change.
    OldImage,
    /// Both images.
    NewAndOldImages,
    /// A view type this adapter does not know, kept as sent.
    Unknown(String),
}

impl StreamViewType {
    /// Parses the stream's spelling (`NEW_AND_OLD_IMAGES`, …).
    pub fn parse(name: &str) -> Self {
        match name {
            "KEYS_ONLY" => StreamViewType::KeysOnly,
            "NEW_IMAGE" => StreamViewType::NewImage,
            "OLD_IMAGE" => StreamViewType::OldImage,
            "NEW_AND_OLD_IMAGES" => StreamViewType::NewAndOldImages,
            other => StreamViewType::Unknown(other.to_owned()),
        }
    }

    /// The stream's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            StreamViewType::KeysOnly => "KEYS_ONLY",
            StreamViewType::NewImage => "NEW_IMAGE",
            StreamViewType::OldImage => "OLD_IMAGE",
            StreamViewType::NewAndOldImages => "NEW_AND_OLD_IMAGES",
            StreamViewType::Unknown(name) => name,
        }
    }
}

/// Who made a change, when the stream says (`userIdentity`): only for changes made by
/// DynamoDB itself, such as TTL deletions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserIdentity {
    /// `type`, for example `Service`.
    pub identity_type: String,
    /// `principalId`, for example `dynamodb.amazonaws.com`.
    pub principal_id: String,
}
