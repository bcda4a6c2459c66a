//! Property test: every item shape DynamoDB stores reaches a reader as it was written.
//!
//! Generated items are written with `aws-sdk-dynamodb` to DynamoDB Local (a table with a
//! NEW_AND_OLD_IMAGES stream): inserts, overwrites (MODIFY, with the old image) and deletes
//! (REMOVE). The shard is then read through `DynamoStreamsSource`, and every record's keys
//! and images, converted to `ChangeRecord`, are compared with what was written.
//!
//! The shapes: every attribute type (S, N, B, SS, NS, BS, M, L, NULL, BOOL); empty strings
//! and binaries in non-key attributes and in sets; empty lists; numbers of up to 38 digits at
//! exponents from -130 to +125, written in scientific, integer-mantissa and plain notation;
//! binaries with every byte value; nesting 32 levels deep (one level more is refused, which is
//! checked too); items at the 400 KB limit; unicode attribute names, values and keys. Fixed
//! edge cases come first, then random items from a seeded generator.
//!
//! DynamoDB Local returns a top-level number normalised (plain decimal, no exponent, no
//! leading or trailing zeros), which is checked; a number inside a map or list comes back as
//! written, and a number set inside one in Java `BigDecimal` notation (see
//! tools/dynamodb-local/FACTS.md). Numbers are therefore compared by their exact normalised
//! decimal, all 38 digits; sets are compared as sets (their order is not kept).
//!
//! **Empty maps are not generated**: DynamoDB Local renders `{"M": {}}` in stream records as an
//! untagged `{}` that the SDK cannot parse (an emulator bug, not a shape DynamoDB loses). That
//! case is covered by tests/undecodable.rs.
//!
//! Number generation and normalising live in `item_shapes/numbers.rs`.
//!
//! `KCL_ITEM_SHAPES_SEED` (default [`DEFAULT_SEED`]) and `KCL_ITEM_SHAPES_CASES` (default
//! [`DEFAULT_CASES`] random items) run other or more cases; the seed is printed.

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_adapter::{ChangeRecord, DynamoStreamsSource, EventName, Item};
use kcl_core::{StartPosition, StreamSource};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[path = "item_shapes/numbers.rs"]
mod numbers;
use numbers::{Number, canonical};

const DEFAULT_SEED: u64 = 0x6b63_6c2d_7273;
const DEFAULT_CASES: usize = 150;
/// DynamoDB's item size limit, names and values counted.
const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's nesting limit: a scalar at this level (31 maps or lists around it) is stored.
const MAX_DEPTH: usize = 32;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

// ---- items ---------------------------------------------------------------------------------

/// Characters for names and strings: ASCII, Latin, CJK, emoji, joiners, bidi marks, NUL and
/// U+FFFF.
const ALPHABET: &[char] = &[
    'a',
    'b',
    'z',
    'A',
    'Q',
    '0',
    '9',
    ' ',
    '.',
    '#',
    ':',
    '-',
    '_',
    '"',
    '\\',
    '/',
    'é',
    'ß',
    'Ω',
    'ж',
    '名',
    '字',
    'ﬁ',
    '🎉',
    '🔑',
    '\u{200D}',
    '\u{202E}',
    '\u{0301}',
    '\u{0}',
    '\u{1F}',
    '\u{7F}',
    '\u{FFFF}',
    '\u{10FFFF}',
];

fn text(rng: &mut SmallRng, max: usize) -> String {
    let len = rng.random_range(0..=max);
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())]).collect()
}

fn name(rng: &mut SmallRng) -> String {
    let mut name = text(rng, 12);
    if name.is_empty() {
        name.push('n');
    }
    name
}

fn bytes(rng: &mut SmallRng, max: usize) -> Vec<u8> {
    let len = rng.random_range(0..=max);
    (0..len).map(|_| rng.random::<u8>()).collect()
}

/// `n` distinct values from `make`, by their normalised form.
fn distinct<T>(
    rng: &mut SmallRng,
    n: usize,
    key: impl Fn(&T) -> String,
    mut make: impl FnMut(&mut SmallRng) -> T,
) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for _ in 0..n * 3 {
        let value = make(rng);
        if seen.insert(key(&value)) {
            out.push(value);
        }
        if out.len() == n {
            break;
        }
    }
    out
}

/// A random attribute value at nesting level `level` (1 for an item's attribute).
fn value(rng: &mut SmallRng, level: usize) -> AttributeValue {
    let scalar_only = level >= MAX_DEPTH || (level > 4 && rng.random_bool(0.7));
    match rng.random_range(0..if scalar_only { 8 } else { 10 }) {
        0 => AttributeValue::S(text(rng, 40)),
        1 => AttributeValue::N(Number::random(rng).written(rng)),
        2 => AttributeValue::B(Blob::new(bytes(rng, 40))),
        3 => {
            let n = rng.random_range(1..=5);
            AttributeValue::Ss(distinct(rng, n, |s: &String| s.clone(), |r| text(r, 10)))
        }
        4 => {
            let n = rng.random_range(1..=5);
            AttributeValue::Ns(distinct(rng, n, |s: &String| canonical(s), |r| Number::random(r).written(r)))
        }
        5 => {
            let n = rng.random_range(1..=5);
            let blobs = distinct(rng, n, |b: &Vec<u8>| format!("{b:?}"), |r| bytes(r, 8));
            AttributeValue::Bs(blobs.into_iter().map(Blob::new).collect())
        }
        6 => AttributeValue::Null(true),
        7 => AttributeValue::Bool(rng.random_bool(0.5)),
        // Maps have at least one entry (see the module docs); lists may be empty.
        8 => {
            let n = rng.random_range(1..=4);
            AttributeValue::M((0..n).map(|_| (name(rng), value(rng, level + 1))).collect())
        }
        _ => {
            let n = rng.random_range(0..=4);
            AttributeValue::L((0..n).map(|_| value(rng, level + 1)).collect())
        }
    }
}

fn random_item(rng: &mut SmallRng) -> Item {
    let n = rng.random_range(1..=10);
    (0..n).map(|_| (name(rng), value(rng, 1))).collect()
}

/// A value `levels` deep: containers (maps and lists, alternating from `map_first`) around a
/// string.
fn nested(levels: usize, map_first: bool) -> AttributeValue {
    let mut v = AttributeValue::S(format!("level {levels}"));
    for i in (1..levels).rev() {
        v = if (i % 2 == 1) == map_first {
            AttributeValue::M(HashMap::from([(format!("m{i}"), v)]))
        } else {
            AttributeValue::L(vec![AttributeValue::Null(true), v])
        };
    }
    v
}

fn item(pairs: Vec<(&str, AttributeValue)>) -> Item {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The fixed edge cases (without keys).
fn edge_items() -> Vec<(&'static str, Item)> {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: &str| AttributeValue::N(v.to_owned());
    let every_byte: Vec<u8> = (0..=255).collect();
    let nines = format!("9.{}E+125", "9".repeat(37));
    let near_limit = |pk: &str, name: &str| MAX_ITEM_BYTES - "pk".len() - pk.len() - name.len();
    vec![
        (
            "every-type",
            item(vec![
                ("s", s("text")),
                ("n", n("42")),
                ("b", AttributeValue::B(Blob::new(b"\x00\x01binary".to_vec()))),
                ("ss", AttributeValue::Ss(vec!["a".into(), "b".into()])),
                ("ns", AttributeValue::Ns(vec!["1".into(), "-2.5".into()])),
                ("bs", AttributeValue::Bs(vec![Blob::new(vec![1]), Blob::new(vec![2, 3])])),
                ("m", AttributeValue::M(HashMap::from([("k".to_owned(), n("1"))]))),
                ("l", AttributeValue::L(vec![s("x"), n("2")])),
                ("null", AttributeValue::Null(true)),
                ("yes", AttributeValue::Bool(true)),
                ("no", AttributeValue::Bool(false)),
            ]),
        ),
        (
            "empties",
            item(vec![
                ("s", s("")),
                ("b", AttributeValue::B(Blob::new(Vec::new()))),
                ("l", AttributeValue::L(Vec::new())),
                ("ss", AttributeValue::Ss(vec![String::new(), "x".into()])),
                ("bs", AttributeValue::Bs(vec![Blob::new(Vec::new()), Blob::new(vec![0])])),
                (
                    "nested",
                    AttributeValue::L(vec![
                        s(""),
                        AttributeValue::L(Vec::new()),
                        AttributeValue::M(HashMap::from([("e".to_owned(), s(""))])),
                    ]),
                ),
            ]),
        ),
        (
            "numbers",
            item(vec![
                ("min", n("1E-130")),
                ("max", n(&nines)),
                ("neg-max", n(&format!("-{nines}"))),
                ("neg-min", n("-1e-130")),
                ("digits38-min", n(&format!("1.{}E-130", "2345678901234567890123456789012345678"))),
                ("digits38", n("12345678901234567890123456789012345678")),
                ("zero", n("-0.000")),
                ("sci", n("1.50E+2")),
                ("ns", AttributeValue::Ns(vec!["1E-130".into(), nines.clone(), "0".into(), "-1".into()])),
            ]),
        ),
        (
            "bytes",
            item(vec![
                ("all", AttributeValue::B(Blob::new(every_byte.clone()))),
                ("each", AttributeValue::Bs((0..=255u8).map(|b| Blob::new(vec![b])).collect())),
            ]),
        ),
        ("deep", item(vec![("maps", nested(MAX_DEPTH, true)), ("lists", nested(MAX_DEPTH, false))])),
        ("ключ🔑名", item(vec![("ü名🎉\u{200D}", s("值 \u{0} \u{FFFF} 🎉\u{202E}")), ("\u{0301}", n("1"))])),
        ("big-s", item(vec![("big", s(&"s".repeat(near_limit("big-s", "big"))))])),
        ("big-utf8", item(vec![("big", s(&"名".repeat(near_limit("big-utf8", "big") / 3)))])),
        (
            "big-b",
            item(vec![("big", AttributeValue::B(Blob::new(every_byte.repeat(near_limit("big-b", "big") / 256))))]),
        ),
    ]
}

// ---- comparing ---------------------------------------------------------------------------

/// `value` compared by content: sets sorted, numbers normalised (an exact decimal form, so
/// equal texts mean equal numbers, all 38 digits).
fn normalize(value: &AttributeValue) -> AttributeValue {
    match value {
        AttributeValue::N(n) => AttributeValue::N(canonical(n)),
        AttributeValue::Ns(ns) => {
            let mut ns: Vec<String> = ns.iter().map(|n| canonical(n)).collect();
            ns.sort();
            AttributeValue::Ns(ns)
        }
        AttributeValue::Ss(ss) => {
            let mut ss = ss.clone();
            ss.sort();
            AttributeValue::Ss(ss)
        }
        AttributeValue::Bs(bs) => {
            let mut bs = bs.clone();
            bs.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
            AttributeValue::Bs(bs)
        }
        AttributeValue::M(m) => AttributeValue::M(normalize_item(m)),
        AttributeValue::L(l) => AttributeValue::L(l.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

fn normalize_item(item: &Item) -> Item {
    item.iter().map(|(k, v)| (k.clone(), normalize(v))).collect()
}

/// A top-level number or number set that DynamoDB Local did not render normalised (it does
/// at the top level; inside maps and lists it keeps the text as written).
fn unnormalised_top_level_number(got: &Item) -> Option<String> {
    got.iter().find_map(|(name, value)| {
        let texts: Vec<&String> = match value {
            AttributeValue::N(n) => vec![n],
            AttributeValue::Ns(ns) => ns.iter().collect(),
            _ => return None,
        };
        let odd = texts.into_iter().find(|n| canonical(n) != **n)?;
        Some(format!("attribute {name:?}: number {odd:?} is not rendered as {:?}", canonical(odd)))
    })
}

fn clipped(v: &impl std::fmt::Debug) -> String {
    let text = format!("{v:?}");
    match text.char_indices().nth(400) {
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
        None => text,
    }
}

/// Where `got` differs from what was written, if anywhere.
fn difference(written: &Item, got: &Item) -> Option<String> {
    if let Some(odd) = unnormalised_top_level_number(got) {
        return Some(odd);
    }
    let want = normalize_item(written);
    let got = normalize_item(got);
    let mut names: Vec<&String> = want.keys().chain(got.keys()).collect();
    names.sort();
    names.dedup();
    names.into_iter().find_map(|name| {
        let (w, g) = (want.get(name), got.get(name));
        (w != g).then(|| format!("attribute {name:?}: want {}, got {}", clipped(&w), clipped(&g)))
    })
}

// ---- the test ----------------------------------------------------------------------------

/// One change as written, in stream order.
struct Change {
    pk: String,
    event: EventName,
    old: Option<Item>,
    new: Option<Item>,
}

async fn put(dynamodb: &aws_sdk_dynamodb::Client, table: &str, item: &Item) {
    let out = dynamodb.put_item().table_name(table).set_item(Some(item.clone())).send().await;
    out.unwrap_or_else(|e| {
        panic!("PutItem {}: {}", clipped(&item.get("pk")), aws_sdk_dynamodb::error::DisplayErrorContext(e))
    });
}

/// Writes `item` under key `pk`, then perhaps overwrites it and perhaps deletes it.
async fn write_case(
    rng: &mut SmallRng,
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: String,
    mut item: Item,
    changes: &mut Vec<Change>,
) {
    item.insert("pk".to_owned(), AttributeValue::S(pk.clone()));
    put(dynamodb, table, &item).await;
    changes.push(Change { pk: pk.clone(), event: EventName::Insert, old: None, new: Some(item.clone()) });
    // Large items are left alone: their MODIFY records would carry two 400 KB images.
    if item.len() > 1 && pk.starts_with("big") {
        return;
    }
    if rng.random_bool(0.3) {
        let mut next = random_item(rng);
        next.insert("pk".to_owned(), AttributeValue::S(pk.clone()));
        next.insert("version".to_owned(), AttributeValue::N("2".to_owned()));
        put(dynamodb, table, &next).await;
        changes.push(Change { pk: pk.clone(), event: EventName::Modify, old: Some(item), new: Some(next.clone()) });
        item = next;
    }
    if rng.random_bool(0.2) {
        let key = AttributeValue::S(pk.clone());
        let out = dynamodb.delete_item().table_name(table).key("pk", key).send().await;
        out.unwrap_or_else(|e| panic!("DeleteItem: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)));
        changes.push(Change { pk, event: EventName::Remove, old: Some(item), new: None });
    }
}

async fn read_all(source: &DynamoStreamsSource) -> Vec<ChangeRecord> {
    let shards = source.list_shards().await.unwrap_or_else(|e| panic!("{e}"));
    let [shard] = &shards[..] else { panic!("want one shard, got {shards:?}") };
    let mut it = source.shard_iterator(&shard.id, &StartPosition::TrimHorizon).await.unwrap_or_else(|e| panic!("{e}"));
    let mut records = Vec::new();
    loop {
        let batch = source.read(&it, 1000).await.unwrap_or_else(|e| panic!("{e}"));
        if batch.records.is_empty() {
            return records;
        }
        records.extend(batch.records);
        it = batch.next_iterator.unwrap_or_else(|| panic!("the open shard ended"));
    }
}

#[tokio::test]
async fn written_items_reach_the_reader_unchanged() {
    let seed: u64 = env_or("KCL_ITEM_SHAPES_SEED", DEFAULT_SEED);
    let cases: usize = env_or("KCL_ITEM_SHAPES_CASES", DEFAULT_CASES);
    eprintln!("item shapes: seed {seed} (KCL_ITEM_SHAPES_SEED), {cases} random items (KCL_ITEM_SHAPES_CASES)");
    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(seed);
    let local = DynamoDbLocal::shared();
    let table = unique_name("item-shapes");
    let stream_arn = local.create_stream_table(&table).await;
    let dynamodb = local.dynamodb_client();

    let mut changes = Vec::new();
    for (pk, item) in edge_items() {
        write_case(&mut rng, &dynamodb, &table, pk.to_owned(), item, &mut changes).await;
    }
    for i in 0..cases {
        let pk = format!("{i}:{}", text(&mut rng, 20));
        let item = random_item(&mut rng);
        write_case(&mut rng, &dynamodb, &table, pk, item, &mut changes).await;
    }
    let written = started.elapsed();

    let source = DynamoStreamsSource::from_stream_arn(local.streams_client(), stream_arn);
    let records = read_all(&source).await;
    assert_eq!(records.len(), changes.len(), "seed {seed}: one record per change");
    for (i, (record, change)) in records.iter().zip(&changes).enumerate() {
        let at = format!("seed {seed}, change {i} ({} of {:?})", change.event, change.pk);
        assert_eq!(record.event_name(), &change.event, "{at}");
        let keys = item(vec![("pk", AttributeValue::S(change.pk.clone()))]);
        assert_eq!(record.keys(), &keys, "{at}");
        for (part, want, got) in [("new", &change.new, record.new_image()), ("old", &change.old, record.old_image())] {
            match (want, got) {
                (None, None) => {}
                (Some(want), Some(got)) => {
                    if let Some(diff) = difference(want, got) {
                        panic!("{at}: the {part} image differs at {diff}");
                    }
                }
                (want, got) => panic!("{at}: {part} image: want {}, got {}", clipped(want), clipped(&got)),
            }
        }
    }
    let sizes: Vec<u64> = records.iter().filter_map(ChangeRecord::size_bytes).collect();
    eprintln!(
        "item shapes: {} changes ({} edge items, {cases} random items) written in {written:.1?}, read and compared \
         by {:.1?}; largest record {} bytes",
        changes.len(),
        edge_items().len(),
        started.elapsed(),
        sizes.iter().max().unwrap_or(&0)
    );
}

/// The limits the edge cases sit at: one nesting level more, or one byte more, is refused.
#[tokio::test]
async fn one_level_or_one_byte_more_is_refused() {
    let local = DynamoDbLocal::shared();
    let table = unique_name("item-limits");
    local.create_stream_table(&table).await;
    let dynamodb = local.dynamodb_client();
    let pk = || ("pk", AttributeValue::S("x".to_owned()));
    let too_deep = item(vec![pk(), ("maps", nested(MAX_DEPTH + 1, true))]);
    let too_big = item(vec![pk(), ("big", AttributeValue::S("s".repeat(MAX_ITEM_BYTES - "pkxbig".len() + 1)))]);
    for (what, item, message) in [
        (format!("{} levels", MAX_DEPTH + 1), too_deep, "Nesting Levels"),
        ("one byte over".to_owned(), too_big, "Item size"),
    ] {
        let out = dynamodb.put_item().table_name(&table).set_item(Some(item)).send().await;
        let err = out.err().unwrap_or_else(|| panic!("{what}: stored"));
        let text = aws_sdk_dynamodb::error::DisplayErrorContext(&err).to_string();
        assert!(text.contains("ValidationException") && text.contains(message), "{what}: {text}");
    }
}
