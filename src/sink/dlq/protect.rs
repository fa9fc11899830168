//! What a dead letter may carry: never an evaluator's identity in clear text.
//!
//! One rule, used by the dead-letter topic and by the offline rejected-lines file alike
//! ([`Protector::protect`]):
//!
//! | the rejected payload | what is parked | `haochaping.payload` |
//! |---|---|---|
//! | a JSON object with identity fields at its top level | the object with them replaced by `evaluatorKey` | `redacted` |
//! | a JSON object with no identity field anywhere | the bytes as received | `as_received` |
//! | anything else (truncated JSON, two objects, a bare string, not UTF-8, identity nested) | AES-256-GCM ciphertext, `nonce ‖ ciphertext ‖ tag` | `encrypted` |
//! | the same without a `dlq.encryption_key` | a placeholder with the size and SHA-256 | `withheld` |
//!
//! A payload is never cut in clear unless it is already safe to show: a record over the size bound
//! keeps a head of its redacted (or, for an unparseable one, encrypted) form, marked
//! `haochaping.truncated`, with the size and SHA-256 of the untruncated form in
//! `haochaping.original.size` / `haochaping.original.sha256` (after redaction, for a redacted record:
//! a digest of a record whose only unknown is an ID number could otherwise be reversed by trying
//! every ID number).

use std::borrow::Cow;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::transform::identity::{EvaluatorKeyer, REDACTED_FIELDS};

/// How the payload of a dead letter relates to the message that was rejected.
pub const HEADER_PAYLOAD: &str = "haochaping.payload";
/// `aes-256-gcm:<key id>` on an encrypted payload.
pub const HEADER_ENCRYPTION: &str = "haochaping.encryption";
/// `true` when the payload is only the head of the record (it was too large for the topic).
pub const HEADER_TRUNCATED: &str = "haochaping.truncated";
/// Size in bytes of the record before it was truncated or withheld.
pub const HEADER_ORIGINAL_SIZE: &str = "haochaping.original.size";
/// Lowercase hex SHA-256 of the record before it was truncated or withheld.
pub const HEADER_ORIGINAL_SHA256: &str = "haochaping.original.sha256";

/// The name of the cipher in [`HEADER_ENCRYPTION`].
pub const CIPHER: &str = "aes-256-gcm";
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// What encryption adds to a payload: the nonce in front, the tag behind.
pub const ENCRYPTION_OVERHEAD: usize = NONCE_BYTES + TAG_BYTES;
/// Bound on the associated data: a sealed payload only opens as a haochaping dead letter.
const ASSOCIATED_DATA: &[u8] = b"haochaping.dlq.v1";

/// The form of a parked payload, published in [`HEADER_PAYLOAD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    AsReceived,
    Redacted,
    Encrypted,
    Withheld,
}

impl Form {
    pub fn code(self) -> &'static str {
        match self {
            Form::AsReceived => "as_received",
            Form::Redacted => "redacted",
            Form::Encrypted => "encrypted",
            Form::Withheld => "withheld",
        }
    }

    pub fn from_code(code: &str) -> Option<Form> {
        [
            Form::AsReceived,
            Form::Redacted,
            Form::Encrypted,
            Form::Withheld,
        ]
        .into_iter()
        .find(|f| f.code() == code)
    }

    /// Whether the parked bytes are the original ones (or its head) in clear.
    pub fn is_clear(self) -> bool {
        matches!(self, Form::AsReceived | Form::Redacted)
    }
}

/// Why a dead-letter key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("must be 32 bytes, written as 64 hex digits or in base64 (got {0} characters)")]
    Format(usize),
}

/// Why an encrypted dead letter could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("encrypted with key {found}, but the key given is {expected}")]
    WrongKey { found: String, expected: String },
    #[error("encryption header {0:?} is not aes-256-gcm:<key id>")]
    UnknownCipher(String),
    #[error("the ciphertext does not authenticate (damaged, or not a haochaping dead letter)")]
    Damaged,
}

/// The AES-256-GCM key of the dead letters. Its id (the first 8 hex digits of the SHA-256 of the
/// key) travels with every record, so a replay can tell a wrong key from a damaged record.
#[derive(Clone)]
pub struct DlqKey {
    cipher: Aes256Gcm,
    id: String,
}

impl std::fmt::Debug for DlqKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DlqKey({CIPHER}:{})", self.id)
    }
}

impl DlqKey {
    /// A key from 64 hex digits or from base64 (standard or URL-safe, padded or not) of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).ok()
        } else {
            let engines = [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::STANDARD_NO_PAD,
                base64::engine::general_purpose::URL_SAFE,
                base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            engines.iter().find_map(|e| e.decode(text).ok())
        };
        match bytes {
            Some(bytes) if bytes.len() == 32 => Ok(Self::from_bytes(&bytes)),
            _ => Err(KeyError::Format(text.chars().count())),
        }
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let id = hex::encode(&Sha256::digest(bytes)[..4]);
        // 32 bytes were checked by the caller; `new_from_slice` only fails on another length.
        let cipher = Aes256Gcm::new_from_slice(bytes)
            .unwrap_or_else(|_| unreachable!("the key is 32 bytes"));
        Self { cipher, id }
    }

    /// The key id: 8 lowercase hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The value of [`HEADER_ENCRYPTION`] for records sealed with this key.
    pub fn header(&self) -> String {
        format!("{CIPHER}:{}", self.id)
    }

    /// `nonce ‖ ciphertext ‖ tag`, with a fresh random 96-bit nonce.
    pub fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: ASSOCIATED_DATA,
                },
            )
            .ok()?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// Opens a payload sealed under the key named by `header` (the [`HEADER_ENCRYPTION`] value).
    pub fn open(&self, header: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let Some(found) = header
            .strip_prefix(CIPHER)
            .and_then(|r| r.strip_prefix(':'))
        else {
            return Err(OpenError::UnknownCipher(header.chars().take(40).collect()));
        };
        if found != self.id {
            return Err(OpenError::WrongKey {
                found: found.chars().take(16).collect(),
                expected: self.id.clone(),
            });
        }
        if sealed.len() < ENCRYPTION_OVERHEAD {
            return Err(OpenError::Damaged);
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: ASSOCIATED_DATA,
                },
            )
            .map_err(|_| OpenError::Damaged)
    }
}

/// A payload as it may be parked, with what the headers must say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub payload: Vec<u8>,
    pub form: Form,
    /// `aes-256-gcm:<key id>` when [`Form::Encrypted`].
    pub encryption: Option<String>,
    pub truncated: bool,
    /// Size and SHA-256 of the record before truncation, when truncated or withheld.
    pub original: Option<(usize, String)>,
}

impl Parked {
    /// The payload-describing headers, in order.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![(HEADER_PAYLOAD, self.form.code().to_owned())];
        if let Some(encryption) = &self.encryption {
            headers.push((HEADER_ENCRYPTION, encryption.clone()));
        }
        if self.truncated {
            headers.push((HEADER_TRUNCATED, "true".to_owned()));
        }
        if let Some((size, sha256)) = &self.original {
            headers.push((HEADER_ORIGINAL_SIZE, size.to_string()));
            headers.push((HEADER_ORIGINAL_SHA256, sha256.clone()));
        }
        headers
    }

    /// Whether the rejection message may echo the payload (a parse error quoting its input) and
    /// must therefore be scrubbed: true whenever the payload itself could not be shown.
    pub fn hides_content(&self) -> bool {
        !self.form.is_clear()
    }
}

/// What a dead letter holds before it is bounded and sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content<'a> {
    /// Bytes that may be shown (identity-free or redacted).
    Clear(Form, Cow<'a, [u8]>),
    /// Bytes that may carry identity in clear: only ever parked encrypted.
    Secret(Cow<'a, [u8]>),
}

impl Content<'_> {
    pub fn into_owned(self) -> Content<'static> {
        match self {
            Content::Clear(form, bytes) => Content::Clear(form, Cow::Owned(bytes.into_owned())),
            Content::Secret(bytes) => Content::Secret(Cow::Owned(bytes.into_owned())),
        }
    }
}

/// Identity is present somewhere in the object other than at its top level, where redaction
/// cannot reach it.
fn nested_identity(value: &serde_json::Value, depth: usize) -> bool {
    match value {
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| {
            (depth > 0 && REDACTED_FIELDS.contains(&k.as_str())) || nested_identity(v, depth + 1)
        }),
        serde_json::Value::Array(items) => items.iter().any(|v| nested_identity(v, depth + 1)),
        _ => false,
    }
}

/// Classifies a rejected payload: what of it may be shown.
pub fn classify<'a>(keyer: &EvaluatorKeyer, payload: &'a [u8]) -> Content<'a> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Content::Secret(Cow::Borrowed(payload));
    };
    let Some(object) = value.as_object() else {
        return Content::Secret(Cow::Borrowed(payload));
    };
    if nested_identity(&value, 0) {
        return Content::Secret(Cow::Borrowed(payload));
    }
    if REDACTED_FIELDS.iter().all(|f| !object.contains_key(*f)) {
        return Content::Clear(Form::AsReceived, Cow::Borrowed(payload));
    }
    match keyer.redact_json(payload) {
        Some(redacted) => Content::Clear(Form::Redacted, Cow::Owned(redacted)),
        None => Content::Secret(Cow::Borrowed(payload)),
    }
}

/// The first at most `limit` bytes, cut at a character boundary when the bytes are UTF-8 (so a
/// truncated JSON head stays readable text).
pub fn head(bytes: &[u8], limit: usize) -> &[u8] {
    if bytes.len() <= limit {
        return bytes;
    }
    let mut end = limit;
    if std::str::from_utf8(bytes).is_ok() {
        // At most 3 steps back: a UTF-8 character is at most 4 bytes.
        while end > 0 && (bytes[end] & 0b1100_0000) == 0b1000_0000 {
            end -= 1;
        }
    }
    &bytes[..end]
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The placeholder parked instead of a payload that can be neither redacted nor encrypted.
fn placeholder(size: usize, sha256: &str) -> Vec<u8> {
    serde_json::json!({
        "haochaping": "withheld: the record could not be redacted and was not encrypted (set dlq.encryption_key)",
        "size": size,
        "sha256": sha256,
    })
    .to_string()
    .into_bytes()
}

/// Bounds and seals classified content into at most `limit` payload bytes. `original` is the
/// size and digest of the untruncated form when it is already known (a record being shrunk
/// again); otherwise it is computed from `content`.
pub fn seal(
    content: &Content<'_>,
    key: Option<&DlqKey>,
    limit: usize,
    original: Option<(usize, String)>,
) -> Parked {
    let describe = |bytes: &[u8]| {
        original
            .clone()
            .unwrap_or_else(|| (bytes.len(), sha256_hex(bytes)))
    };
    match (content, key) {
        (Content::Clear(form, bytes), _) => {
            let bytes: &[u8] = bytes;
            let kept = head(bytes, limit);
            let truncated = kept.len() < bytes.len() || original.is_some();
            Parked {
                payload: kept.to_vec(),
                form: *form,
                encryption: None,
                truncated,
                original: truncated.then(|| describe(bytes)),
            }
        }
        (Content::Secret(bytes), Some(key)) => {
            let bytes: &[u8] = bytes;
            let kept = head(bytes, limit.saturating_sub(ENCRYPTION_OVERHEAD));
            let truncated = kept.len() < bytes.len() || original.is_some();
            match key.seal(kept) {
                Some(sealed) if sealed.len() <= limit => Parked {
                    payload: sealed,
                    form: Form::Encrypted,
                    encryption: Some(key.header()),
                    truncated,
                    original: truncated.then(|| describe(bytes)),
                },
                // Too small a bound for even an empty ciphertext (or a plaintext past AES-GCM's
                // limit): the record is withheld, its existence and digest kept.
                _ => withheld(describe(bytes), limit),
            }
        }
        (Content::Secret(bytes), None) => withheld(describe(bytes), limit),
    }
}

fn withheld(original: (usize, String), limit: usize) -> Parked {
    let payload = placeholder(original.0, &original.1);
    Parked {
        payload: if payload.len() <= limit {
            payload
        } else {
            Vec::new()
        },
        form: Form::Withheld,
        encryption: None,
        truncated: false,
        original: Some(original),
    }
}

/// Parks rejected payloads: redacts, encrypts or withholds them, within a size bound.
#[derive(Clone, Debug)]
pub struct Protector {
    keyer: EvaluatorKeyer,
    key: Option<DlqKey>,
}

impl Protector {
    pub fn new(keyer: EvaluatorKeyer, key: Option<DlqKey>) -> Self {
        Self { keyer, key }
    }

    pub fn key(&self) -> Option<&DlqKey> {
        self.key.as_ref()
    }

    /// What of a rejected payload may be shown.
    pub fn classify<'a>(&self, payload: &'a [u8]) -> Content<'a> {
        classify(&self.keyer, payload)
    }

    /// Bounds and seals classified content under this protector's key (see [`seal`]).
    pub fn seal(
        &self,
        content: &Content<'_>,
        limit: usize,
        original: Option<(usize, String)>,
    ) -> Parked {
        seal(content, self.key.as_ref(), limit, original)
    }

    /// The parked form of a rejected payload in at most `limit` bytes.
    pub fn protect(&self, payload: &[u8], limit: usize) -> Parked {
        self.protect_known(payload, limit, None)
    }

    /// The parked form of the head of a payload too large to hold whole, given the size and
    /// SHA-256 of the whole (an offline line past the read bound: it is hashed as it is skipped).
    pub fn protect_head(&self, head: &[u8], limit: usize, whole: (usize, String)) -> Parked {
        self.protect_known(head, limit, Some(whole))
    }

    fn protect_known(
        &self,
        payload: &[u8],
        limit: usize,
        original: Option<(usize, String)>,
    ) -> Parked {
        let parked = seal(
            &classify(&self.keyer, payload),
            self.key.as_ref(),
            limit,
            original,
        );
        crate::telemetry::dlq_parked(parked.form.code(), parked.truncated);
        parked
    }
}

/// Replaces every double-quoted span of a rejection message by `"…"`: a parser's message may quote
/// its input (serde's `invalid type: string "…"`), and the input of a record that had to be
/// encrypted or withheld is exactly what must not be shown.
pub fn scrub_message(message: &str) -> Cow<'_, str> {
    if !message.contains('"') {
        return Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        match (c, inside) {
            ('"', false) => {
                out.push_str("\"…");
                inside = true;
            }
            ('"', true) => {
                out.push('"');
                inside = false;
            }
            (c, false) => out.push(c),
            (_, true) => {}
        }
    }
    if inside {
        out.push('"');
    }
    Cow::Owned(out)
}

/// One line of the offline rejected-lines file: the same rule as the dead-letter topic, with the
/// headers as fields and an encrypted payload in base64.
pub fn rejected_line(
    parked: &Parked,
    reason: &str,
    message: &str,
    offset: i64,
) -> serde_json::Value {
    let message = if parked.hides_content() {
        scrub_message(message)
    } else {
        Cow::Borrowed(message)
    };
    let mut line = serde_json::json!({
        "reason": reason,
        "message": message,
        "offset": offset,
        "payload_form": parked.form.code(),
    });
    let fields = &mut line;
    match parked.form {
        Form::AsReceived | Form::Redacted => {
            fields["payload"] = String::from_utf8_lossy(&parked.payload).into();
        }
        Form::Encrypted => {
            fields["payload_base64"] = base64::engine::general_purpose::STANDARD
                .encode(&parked.payload)
                .into();
        }
        Form::Withheld => {}
    }
    if let Some(encryption) = &parked.encryption {
        fields["encryption"] = encryption.clone().into();
    }
    if parked.truncated {
        fields["truncated"] = true.into();
    }
    if let Some((size, sha256)) = &parked.original {
        fields["original_size"] = (*size).into();
        fields["original_sha256"] = sha256.clone().into();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const IDENTITY: [&str; 3] = ["张三", "410328199001011234", "13800000000"];

    fn keyer() -> EvaluatorKeyer {
        EvaluatorKeyer::new(b"test-secret-0123456789")
    }

    fn key() -> DlqKey {
        DlqKey::parse(KEY_HEX).unwrap()
    }

    fn leaks(bytes: &[u8]) -> Option<&'static str> {
        let text = String::from_utf8_lossy(bytes);
        IDENTITY.into_iter().find(|s| text.contains(s))
    }

    const FULL: &str = r#"{"projectNo":"P1","userName":"张三","userCert":"410328199001011234","userPhone":"13800000000"}"#;

    /// Payloads of every shape a producer has been seen to send, each with identity in it.
    fn hostile() -> Vec<(&'static str, Vec<u8>)> {
        let truncated = FULL.as_bytes()[..FULL.len() - 5].to_vec();
        let mut gbk = b"{\"userName\":\"".to_vec();
        gbk.extend_from_slice(&[0xd5, 0xc5, 0xc8, 0xfd]); // 张三 in GBK
        gbk.extend_from_slice(b"\",\"userCert\":\"410328199001011234\"}");
        vec![
            ("truncated JSON", truncated),
            ("two objects", format!("{FULL}{FULL}").into_bytes()),
            (
                "bare string",
                br#""410328199001011234 13800000000 \u5f20""#.to_vec(),
            ),
            ("array", format!("[{FULL}]").into_bytes()),
            ("not UTF-8", gbk),
            (
                "identity nested",
                r#"{"projectNo":"P1","user":{"userCert":"410328199001011234"}}"#
                    .as_bytes()
                    .to_vec(),
            ),
        ]
    }

    #[test]
    fn forms_by_payload_shape() {
        let protector = Protector::new(keyer(), Some(key()));
        let cases: &[(&[u8], Form)] = &[
            (FULL.as_bytes(), Form::Redacted),
            (br#"{"projectNo":"P1"}"#, Form::AsReceived),
            (
                br#"{"userCert":"410328199001011234","userCert":"x"}"#,
                Form::Redacted,
            ),
            (b"{\"projectNo\":", Form::Encrypted),
            (b"\"text\"", Form::Encrypted),
            (b"", Form::Encrypted),
            (&[0xff, 0xfe], Form::Encrypted),
        ];
        for (payload, form) in cases {
            let parked = protector.protect(payload, 1 << 20);
            assert_eq!(parked.form, *form, "{}", String::from_utf8_lossy(payload));
            assert!(!parked.truncated);
            assert_eq!(parked.original, None);
        }
    }

    #[test]
    fn no_identity_in_clear_with_or_without_a_key_at_any_bound() {
        for key in [Some(key()), None] {
            let protector = Protector::new(keyer(), key.clone());
            for (what, payload) in hostile() {
                for limit in [1 << 20, 40, 30, 0] {
                    let parked = protector.protect(&payload, limit);
                    assert!(parked.payload.len() <= limit, "{what} over {limit}");
                    assert_eq!(leaks(&parked.payload), None, "{what} leaked at {limit}");
                    let expected = if key.is_some() && limit >= ENCRYPTION_OVERHEAD {
                        Form::Encrypted
                    } else {
                        Form::Withheld
                    };
                    assert_eq!(parked.form, expected, "{what} at {limit}");
                    for (_, value) in parked.headers() {
                        assert_eq!(leaks(value.as_bytes()), None, "{what} header");
                    }
                }
            }
        }
    }

    #[test]
    fn encrypted_payload_opens_to_the_original_and_only_with_its_key() {
        let protector = Protector::new(keyer(), Some(key()));
        for (what, payload) in hostile() {
            let parked = protector.protect(&payload, 1 << 20);
            let header = parked.encryption.clone().unwrap();
            assert_eq!(header, format!("aes-256-gcm:{}", key().id()));
            assert_eq!(
                key().open(&header, &parked.payload).unwrap(),
                payload,
                "{what}"
            );
            // A fresh nonce each time: the same record never encrypts to the same bytes.
            assert_ne!(protector.protect(&payload, 1 << 20).payload, parked.payload);
        }
        let parked = protector.protect(b"{", 1 << 20);
        let other = DlqKey::parse(&"ab".repeat(32)).unwrap();
        let header = parked.encryption.unwrap();
        assert!(matches!(
            other.open(&header, &parked.payload),
            Err(OpenError::WrongKey { .. })
        ));
        let mut damaged = parked.payload.clone();
        damaged[20] ^= 1;
        assert_eq!(key().open(&header, &damaged), Err(OpenError::Damaged));
        assert_eq!(key().open(&header, b"short"), Err(OpenError::Damaged));
        assert!(matches!(
            key().open("rot13:abc", &parked.payload),
            Err(OpenError::UnknownCipher(_))
        ));
    }

    #[test]
    fn withheld_without_a_key_keeps_size_and_digest() {
        let protector = Protector::new(keyer(), None);
        let payload = b"{\"userCert\":\"410328199001011234\"";
        let parked = protector.protect(payload, 1 << 20);
        assert_eq!(parked.form, Form::Withheld);
        let digest = sha256_hex(payload);
        assert_eq!(parked.original, Some((payload.len(), digest.clone())));
        let shown: serde_json::Value = serde_json::from_slice(&parked.payload).unwrap();
        assert_eq!(shown["sha256"], digest.as_str());
        assert_eq!(shown["size"], payload.len());
    }

    #[test]
    fn oversize_records_keep_a_bounded_head_never_a_clear_one_of_a_secret() {
        let protector = Protector::new(keyer(), Some(key()));
        let text = "长".repeat(1000);
        // A redacted record: a clear head of the redacted form, cut at a character boundary.
        let record = format!(r#"{{"userCert":"410328199001011234","writingEvaluation":"{text}"}}"#);
        let parked = protector.protect(record.as_bytes(), 500);
        assert_eq!((parked.form, parked.truncated), (Form::Redacted, true));
        assert!(parked.payload.len() <= 500);
        assert!(std::str::from_utf8(&parked.payload).is_ok());
        let redacted = keyer().redact_json(record.as_bytes()).unwrap();
        assert!(redacted.starts_with(&parked.payload));
        assert_eq!(
            parked.original,
            Some((redacted.len(), sha256_hex(&redacted)))
        );
        // An unparseable record: an encrypted head; the digest is of the whole original.
        let broken = &record.as_bytes()[..record.len() - 1];
        let parked = protector.protect(broken, 500);
        assert_eq!((parked.form, parked.truncated), (Form::Encrypted, true));
        assert!(parked.payload.len() <= 500);
        let opened = key().open(&key().header(), &parked.payload).unwrap();
        assert!(broken.starts_with(&opened) && opened.len() + 28 + 3 >= 500);
        assert_eq!(parked.original, Some((broken.len(), sha256_hex(broken))));
        // Shrinking again keeps the original's description.
        let again = seal(
            &Content::Secret(Cow::Owned(opened)),
            Some(&key()),
            100,
            parked.original.clone(),
        );
        assert_eq!(again.original, parked.original);
        assert!(again.truncated && again.payload.len() <= 100);
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_nothing_else() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(KEY_HEX).unwrap());
        let cases: &[(&str, bool)] = &[
            (KEY_HEX, true),
            (&KEY_HEX.to_uppercase(), true),
            (&b64, true),
            (b64.trim_end_matches('='), true),
            (&KEY_HEX[..62], false),
            ("", false),
            ("secret", false),
            (&"zz".repeat(32), false),
        ];
        for (text, ok) in cases {
            assert_eq!(DlqKey::parse(text).is_ok(), *ok, "{text}");
        }
        assert_eq!(DlqKey::parse(&b64).unwrap().id(), key().id());
        assert_eq!(key().id().len(), 8);
        let shown = format!("{:?}", key());
        assert!(!shown.contains("0001020304"), "{shown}");
    }

    #[test]
    fn scrubbing_removes_quoted_input() {
        let cases: &[(&str, &str)] = &[
            ("no quotes here", "no quotes here"),
            (
                r#"message is not a JSON object of evaluation fields: invalid type: string "410328199001011234", expected struct"#,
                r#"message is not a JSON object of evaluation fields: invalid type: string "…", expected struct"#,
            ),
            (r#"two "a" and "b""#, r#"two "…" and "…""#),
            (r#"unterminated "张三"#, r#"unterminated "…""#),
        ];
        for (message, scrubbed) in cases {
            assert_eq!(scrub_message(message), *scrubbed);
        }
    }

    #[test]
    fn rejected_lines_follow_the_same_rule() {
        let protector = Protector::new(keyer(), Some(key()));
        let parked = protector.protect(b"\"410328199001011234\"", 1 << 20);
        let line = rejected_line(
            &parked,
            "not_json",
            r#"invalid type: string "410328199001011234""#,
            7,
        );
        let text = line.to_string();
        assert_eq!(leaks(text.as_bytes()), None, "{text}");
        assert_eq!(line["payload_form"], "encrypted");
        assert_eq!(line["encryption"], key().header());
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(line["payload_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            key().open(&key().header(), &sealed).unwrap(),
            b"\"410328199001011234\""
        );
        let parked = protector.protect(FULL.as_bytes(), 1 << 20);
        let line = rejected_line(&parked, "invalid_field", "m", 8);
        assert_eq!(line["payload_form"], "redacted");
        assert!(line["payload"].as_str().unwrap().contains("evaluatorKey"));
    }
}
