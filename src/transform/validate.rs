//! Validation: a decoded [`WireEvaluation`] becomes a typed [`Evaluation`] or a [`Rejection`].
//!
//! Every rule is a small pure function over one field, so each can be tested on its own (see the
//! tables below). Which limits apply is configuration ([`ValidationRules`]), not code.
//!
//! Rejection messages name the field and the problem, never the value: they travel in a DLQ header
//! that is not redacted, and a producer may well have put an ID number in the wrong field. The
//! record itself (identity redacted) is in the dead letter for whoever needs the value.
//!
//! Characters that do not show are rejected rather than stripped, so that nothing is changed
//! silently:
//! - identifiers (`projectNo`, `taskCode`, `deptCode`, `areaCode`, `staffId`) are compared, joined
//!   and displayed as they are, so they may hold no whitespace, control, bidi, zero-width or other
//!   invisible character ([`identifier_flaw`]): one would make two cases that look the same
//!   different, or reorder what an operator sees (U+202E);
//! - names (`taskName`, `deptName`, `staffName`) are one line: no control character at all;
//! - free text (`writingEvaluation`) keeps line breaks and tabs (`\n`, `\r`, `\t`) but no other
//!   control character (NUL, ESC, DEL, C1 controls), which only a broken or hostile producer sends.
//!
//! Names and free text keep format characters (Cf): bidi marks are part of ordinary Uyghur and
//! Kazakh text from Xinjiang's platforms and ZWJ is part of emoji, so their display is the reader's
//! business ([`text_flaw`]).

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;

use crate::decode::{Reason, Rejection, WireEvaluation, WireValue};
use crate::region::RegionCode;
use crate::transform::identity::is_evaluator_key;

/// Limits of the validator; part of the engine's config (`[validation]`).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationRules {
    /// Messages larger than this go to the DLQ as `oversize`.
    pub max_message_bytes: usize,
    /// Longest accepted free text (`writingEvaluation`), in characters.
    pub max_text_chars: usize,
    /// Longest accepted identifier or name field, in characters.
    pub max_field_chars: usize,
    /// How far `assessTime` may lie in the future (clock skew between platforms).
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// A bad review (levels 1–2) must carry tags or text (the vendor upload rule of DOMAIN.md §7).
    pub require_reason_for_bad_review: bool,
}

impl Default for ValidationRules {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_text_chars: 2000,
            max_field_chars: 200,
            max_clock_skew: Duration::from_secs(300),
            require_reason_for_bad_review: true,
        }
    }
}

/// The five levels; 5 非常满意 … 1 非常不满意, in the interface's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Satisfaction(u8);

impl Satisfaction {
    pub fn new(level: u8) -> Option<Self> {
        (1..=5).contains(&level).then_some(Self(level))
    }
    pub fn level(self) -> u8 {
        self.0
    }
    /// 差评: 不满意 or 非常不满意.
    pub fn is_bad_review(self) -> bool {
        self.0 <= 2
    }
    pub fn label(self) -> &'static str {
        ["非常不满意", "不满意", "基本满意", "满意", "非常满意"][usize::from(self.0 - 1)]
    }
}

/// Where the evaluation was given (`pf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    PcWeb = 1,
    Mobile = 2,
    QrCode = 3,
    HallWindow = 4,
    HallOther = 5,
    Hotline12345 = 6,
    Sms = 7,
}

impl Channel {
    pub const ALL: [Channel; 7] = [
        Channel::PcWeb,
        Channel::Mobile,
        Channel::QrCode,
        Channel::HallWindow,
        Channel::HallOther,
        Channel::Hotline12345,
        Channel::Sms,
    ];
    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as i64 == code)
    }
    pub fn code(self) -> u8 {
        self as u8
    }
    /// The lake's `channel` value.
    pub fn name(self) -> &'static str {
        match self {
            Channel::PcWeb => "pc_web",
            Channel::Mobile => "mobile",
            Channel::QrCode => "qr_code",
            Channel::HallWindow => "hall_window",
            Channel::HallOther => "hall_other",
            Channel::Hotline12345 => "hotline_12345",
            Channel::Sms => "sms",
        }
    }
}

/// `assessNumber`: the first evaluation of a case, or the one supplementary (追加) evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssessNumber {
    First = 1,
    Supplementary = 2,
}

impl AssessNumber {
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::First),
            2 => Some(Self::Supplementary),
            _ => None,
        }
    }
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// `userProp`: who evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvaluatorKind {
    NaturalPerson = 1,
    EnterpriseLegalPerson = 2,
    PublicInstitution = 3,
    SocialOrganisation = 4,
    UnincorporatedEnterprise = 5,
    GovernmentBody = 6,
    Other = 9,
}

impl EvaluatorKind {
    pub const ALL: [EvaluatorKind; 7] = [
        EvaluatorKind::NaturalPerson,
        EvaluatorKind::EnterpriseLegalPerson,
        EvaluatorKind::PublicInstitution,
        EvaluatorKind::SocialOrganisation,
        EvaluatorKind::UnincorporatedEnterprise,
        EvaluatorKind::GovernmentBody,
        EvaluatorKind::Other,
    ];
    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as i64 == code)
    }
    pub fn code(self) -> u8 {
        self as u8
    }
    pub fn name(self) -> &'static str {
        match self {
            EvaluatorKind::NaturalPerson => "natural_person",
            EvaluatorKind::EnterpriseLegalPerson => "enterprise_legal_person",
            EvaluatorKind::PublicInstitution => "public_institution",
            EvaluatorKind::SocialOrganisation => "social_organisation",
            EvaluatorKind::UnincorporatedEnterprise => "unincorporated_enterprise",
            EvaluatorKind::GovernmentBody => "government_body",
            EvaluatorKind::Other => "other",
        }
    }
}

/// The evaluator's identity as received; only ever turned into a keyed hash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity<'a> {
    pub name: Option<Cow<'a, str>>,
    pub cert: Option<Cow<'a, str>>,
    pub phone: Option<Cow<'a, str>>,
    pub cert_key: Option<Cow<'a, str>>,
    /// Set when the record comes back from the DLQ with its identity already replaced.
    pub evaluator_key: Option<Cow<'a, str>>,
}

/// A valid evaluation, borrowing its text from the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<'a> {
    pub project_no: Cow<'a, str>,
    pub assess_number: AssessNumber,
    pub satisfaction: Satisfaction,
    pub channel: Channel,
    pub area: RegionCode,
    pub dept_code: Cow<'a, str>,
    pub dept_name: Option<Cow<'a, str>>,
    pub task_code: Cow<'a, str>,
    pub task_name: Cow<'a, str>,
    pub staff_id: Option<Cow<'a, str>>,
    pub staff_name: Option<Cow<'a, str>>,
    /// Tag codes (`evalDetail`), each of the evaluation's level.
    pub tags: Tags,
    pub text: Option<Cow<'a, str>>,
    /// Microseconds since the Unix epoch, UTC.
    pub assessed_at_us: i64,
    pub evaluator_kind: EvaluatorKind,
    pub identity: Identity<'a>,
    pub anonymous: bool,
}

/// An evaluation's tag codes, sorted and distinct; held inline up to eight (the interface's tag
/// lists are short), so that most evaluations allocate none.
pub type Tags = smallvec::SmallVec<[u16; 8]>;

/// China Standard Time is UTC+8 all year (no daylight saving).
pub const CST_OFFSET_SECONDS: i64 = 8 * 3600;

/// Validates one decoded evaluation; `now_us` is the current time (UTC microseconds).
pub fn validate<'a>(
    wire: WireEvaluation<'a>,
    rules: &ValidationRules,
    now_us: i64,
) -> Result<Evaluation<'a>, Rejection> {
    let limit = rules.max_field_chars;
    let identifier = |field: &str, value| {
        required_text(field, value, limit).and_then(|t| clean(field, t, identifier_flaw))
    };
    let line = |field: &str, value| {
        optional_text(field, value, limit)?
            .map(|t| clean(field, t, |t| text_flaw(t, false)))
            .transpose()
    };
    let project_no = identifier("projectNo", wire.project_no)?;
    let task_code = identifier("taskCode", wire.task_code)?;
    let task_name = required_text("taskName", wire.task_name, limit)
        .and_then(|t| clean("taskName", t, |t| text_flaw(t, false)))?;
    let dept_code = identifier("deptCode", wire.dept_code)?;
    check_credit_code(&dept_code)?;
    let area_text = identifier("areaCode", wire.area_code)?;
    let area = RegionCode::parse(&area_text)
        .map_err(|e| Rejection::new(Reason::InvalidAreaCode, format!("field areaCode {e}")))?;
    let channel = required_code("pf", wire.pf, Channel::from_code)?;
    let satisfaction = required_code("satisfaction", wire.satisfaction, |c| {
        u8::try_from(c).ok().and_then(Satisfaction::new)
    })?;
    let assess_number = required_code("assessNumber", wire.assess_number, AssessNumber::from_code)?;
    let evaluator_kind = required_code("userProp", wire.user_prop, EvaluatorKind::from_code)?;
    let anonymous = match wire.anonymity_flag {
        None | Some(WireValue::Null) => false,
        value => required_code("anonymityFlag", value, |c| match c {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        })?,
    };
    let assess_time = required_text("assessTime", wire.assess_time, limit)?;
    let assessed_at_us = parse_assess_time(&assess_time, now_us, rules.max_clock_skew)?;
    let tags = parse_tags(wire.eval_detail, satisfaction)?;
    let text = optional_text(
        "writingEvaluation",
        wire.writing_evaluation,
        rules.max_text_chars,
    )
    .map_err(|mut r| {
        if r.reason == Reason::InvalidField && r.message.contains("characters") {
            r.reason = Reason::TextTooLong;
        }
        r
    })?
    .map(|t| clean("writingEvaluation", t, |t| text_flaw(t, true)))
    .transpose()?;
    if rules.require_reason_for_bad_review
        && satisfaction.is_bad_review()
        && tags.is_empty()
        && text.as_deref().is_none_or(|t| t.trim().is_empty())
    {
        return Err(Rejection::new(
            Reason::BadReviewWithoutReason,
            format!(
                "satisfaction {} ({}) is a bad review and must carry evalDetail tags or writingEvaluation text",
                satisfaction.level(),
                satisfaction.label()
            ),
        ));
    }
    let identity = Identity {
        name: optional_text("userName", wire.user_name, limit)?,
        cert: optional_text("userCert", wire.user_cert, limit)?,
        phone: optional_text("userPhone", wire.user_phone, limit)?,
        cert_key: optional_text("certKey", wire.cert_key, limit)?,
        evaluator_key: optional_text("evaluatorKey", wire.evaluator_key, limit)?,
    };
    check_evaluator_key(&identity)?;
    Ok(Evaluation {
        project_no,
        assess_number,
        satisfaction,
        channel,
        area,
        dept_code,
        dept_name: line("deptName", wire.dept_name)?,
        task_code,
        task_name,
        staff_id: optional_text("staffId", wire.staff_id, limit)?
            .map(|t| clean("staffId", t, identifier_flaw))
            .transpose()?,
        staff_name: line("staffName", wire.staff_name)?,
        tags,
        text,
        assessed_at_us,
        evaluator_kind,
        identity,
        anonymous,
    })
}

/// An incoming `evaluatorKey` is passed through to the lake as the evaluator, so it must be exactly
/// what this engine writes (a DLQ replay carries one in place of the identity fields it removed):
/// otherwise a producer could store an ID number in clear, or pick the evaluator.
pub(crate) fn check_evaluator_key(identity: &Identity<'_>) -> Result<(), Rejection> {
    let Some(key) = &identity.evaluator_key else {
        return Ok(());
    };
    if !is_evaluator_key(key) {
        return Err(Rejection::new(
            Reason::InvalidField,
            "field evaluatorKey is not an evaluator key of this engine (64 lowercase hex digits); \
             send the evaluator as userName, userCert or userPhone",
        ));
    }
    let clear = [
        &identity.name,
        &identity.cert,
        &identity.phone,
        &identity.cert_key,
    ];
    if clear.iter().any(|f| f.is_some()) {
        return Err(Rejection::new(
            Reason::InvalidField,
            "field evaluatorKey replaces userName, userCert, userPhone and certKey in a redacted \
             dead letter and cannot come with them",
        ));
    }
    Ok(())
}

/// One character that a field may not hold, and where: enough to find it, without the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CharFlaw {
    /// Position in characters, from 0.
    pub at: usize,
    pub char: char,
    pub what: &'static str,
}

impl CharFlaw {
    fn rejection(self, field: &str) -> Rejection {
        Rejection::new(
            Reason::InvalidField,
            format!(
                "field {field} contains {} (U+{:04X}) at character {}",
                self.what,
                u32::from(self.char),
                self.at + 1
            ),
        )
    }
}

/// The first character that an identifier may not hold: whitespace, a control (Cc), a format
/// character (Cf: bidi controls U+202A–U+202E, U+2066–U+2069, U+200E/U+200F, U+061C, zero-width
/// U+200B–U+200D, U+2060, U+FEFF, soft hyphen U+00AD …), a line or paragraph separator, or another
/// default-ignorable character that shows as nothing (variation selectors, Hangul fillers…).
pub fn identifier_flaw(text: &str) -> Option<CharFlaw> {
    // Printable ASCII, the usual identifier, is answered by one pass over the bytes; the
    // character walk was 3 % of an offline run's samples (perf, 1 M events).
    if all_bytes(text, |b| matches!(b, b'!'..=b'~')) {
        return None;
    }
    text.chars()
        .enumerate()
        .find_map(|(at, c)| identifier_char_flaw(c).map(|what| CharFlaw { at, char: c, what }))
}

/// What is wrong with `c` in an identifier, if anything. Printable ASCII and the CJK Unified
/// Ideographs (nearly every character of the interface's codes and names) are answered without
/// looking up the character's general category.
fn identifier_char_flaw(c: char) -> Option<&'static str> {
    match c {
        '!'..='~' | '\u{4E00}'..='\u{9FFF}' => None,
        _ => identifier_char_flaw_by_category(c),
    }
}

fn identifier_char_flaw_by_category(c: char) -> Option<&'static str> {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    if c.is_whitespace() {
        return Some("whitespace");
    }
    match get_general_category(c) {
        G::Control => Some("a control character"),
        G::Format => Some("an invisible format character"),
        G::LineSeparator | G::ParagraphSeparator | G::SpaceSeparator => Some("whitespace"),
        _ if is_invisible_mark(c) => Some("an invisible character"),
        _ => None,
    }
}

/// Default-ignorable code points outside Cf that render as nothing (Unicode's
/// Default_Ignorable_Code_Point, less Cf and the unassigned ones).
fn is_invisible_mark(c: char) -> bool {
    matches!(
        c,
        '\u{034F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180D}'
            | '\u{180F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

/// The first control character (Cc) that a name or free text may not hold. With `line_breaks`
/// (free text) `\n`, `\r` and `\t` are allowed; without (names, one line) no control is.
pub fn text_flaw(text: &str, line_breaks: bool) -> Option<CharFlaw> {
    // A control character is a byte below 0x20, 0x7F, or U+0080–U+009F, whose UTF-8 starts with
    // 0xC2: text with none of these bytes (nearly all Chinese text) holds none.
    if all_bytes(text, |b| b >= 0x20 && b != 0x7F && b != 0xC2) {
        return None;
    }
    text.chars().enumerate().find_map(|(at, c)| {
        let allowed = line_breaks && matches!(c, '\n' | '\r' | '\t');
        (c.is_control() && !allowed).then_some(CharFlaw {
            at,
            char: c,
            what: "a control character",
        })
    })
}

/// Whether every byte of `text` passes `ok`. Folds without stopping early, so that the compiler
/// checks many bytes an instruction; the fields are short, and the answer is nearly always yes.
fn all_bytes(text: &str, ok: impl Fn(u8) -> bool) -> bool {
    text.bytes().fold(true, |all, b| all & ok(b))
}

/// Whether `text` is empty or only whitespace, as `str::trim` sees it. A field that starts with
/// a printable ASCII character (nearly every one) is answered without trimming.
fn is_blank(text: &str) -> bool {
    match text.as_bytes().first() {
        Some(b) if b.is_ascii_graphic() => false,
        _ => text.trim().is_empty(),
    }
}

/// `text` unless `flaw` finds a character it may not hold; the rejection names the field.
pub(crate) fn clean<'a>(
    field: &str,
    text: Cow<'a, str>,
    flaw: impl Fn(&str) -> Option<CharFlaw>,
) -> Result<Cow<'a, str>, Rejection> {
    match flaw(&text) {
        Some(flaw) => Err(flaw.rejection(field)),
        None => Ok(text),
    }
}

/// A text field that must be present and non-blank. Numbers are accepted as their decimal text,
/// because some platforms send numeric ids unquoted.
pub(crate) fn required_text<'a>(
    field: &str,
    value: Option<WireValue<'a>>,
    max_chars: usize,
) -> Result<Cow<'a, str>, Rejection> {
    optional_text(field, value, max_chars)?.ok_or_else(|| {
        Rejection::new(
            Reason::MissingField,
            format!("required field {field} is missing or empty"),
        )
    })
}

/// A text field that may be absent, null or empty (all read as absent).
pub(crate) fn optional_text<'a>(
    field: &str,
    value: Option<WireValue<'a>>,
    max_chars: usize,
) -> Result<Option<Cow<'a, str>>, Rejection> {
    let text = match value {
        None | Some(WireValue::Null) => return Ok(None),
        Some(WireValue::Str(s)) => s,
        Some(WireValue::Int(i)) => Cow::Owned(i.to_string()),
        Some(other) => {
            return Err(Rejection::new(
                Reason::InvalidField,
                format!("field {field} must be a string, got {}", other.kind()),
            ))
        }
    };
    if is_blank(&text) {
        return Ok(None);
    }
    // Byte length bounds the character count from above; count only when it could matter.
    if text.len() > max_chars && text.chars().count() > max_chars {
        return Err(Rejection::new(
            Reason::InvalidField,
            format!(
                "field {field} has {} characters, the limit is {max_chars}",
                text.chars().count()
            ),
        ));
    }
    Ok(Some(text))
}

/// A code field (`pf`, `satisfaction`…): an integer or a string of one, within its code set.
pub(crate) fn required_code<T>(
    field: &str,
    value: Option<WireValue<'_>>,
    lookup: impl Fn(i64) -> Option<T>,
) -> Result<T, Rejection> {
    let code = match &value {
        None | Some(WireValue::Null) => {
            return Err(Rejection::new(
                Reason::MissingField,
                format!("required field {field} is missing"),
            ))
        }
        Some(WireValue::Int(i)) => Some(*i),
        Some(WireValue::Str(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => None,
    };
    code.and_then(&lookup).ok_or_else(|| {
        let kind = value.as_ref().map_or("nothing", WireValue::kind);
        Rejection::new(
            Reason::InvalidCode,
            format!("field {field} is not in its code set (got {kind})"),
        )
    })
}

/// GB 32100-2015 unified social credit code: 18 characters of the 31-character alphabet (no I, O, Z,
/// S, V), the last being the check character of the first 17.
pub fn check_credit_code(code: &str) -> Result<(), Rejection> {
    let fail = |why: &str| Rejection::new(Reason::InvalidDeptCode, format!("field deptCode {why}"));
    if code.len() != 18 || !code.is_ascii() {
        return Err(fail(
            "must be 18 characters (GB 32100 unified social credit code)",
        ));
    }
    let mut sum = 0u32;
    for (i, c) in code.bytes().enumerate() {
        let value = credit_code_value(c)
            .ok_or_else(|| fail("contains a character outside the GB 32100 alphabet"))?;
        if i == 17 {
            return if value == credit_code_check(sum) {
                Ok(())
            } else {
                Err(fail("check character does not match"))
            };
        }
        sum += value * CREDIT_CODE_WEIGHTS[i];
    }
    Err(fail("must be 18 characters"))
}

const CREDIT_CODE_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const CREDIT_CODE_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

fn credit_code_value(c: u8) -> Option<u32> {
    CREDIT_CODE_ALPHABET
        .iter()
        .position(|a| *a == c)
        .map(|p| p as u32)
}

fn credit_code_check(weighted_sum: u32) -> u32 {
    (31 - weighted_sum % 31) % 31
}

/// The check character for the first 17 characters of a credit code (used by the generator).
pub fn credit_code_check_char(first17: &str) -> Option<char> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0;
    for (i, c) in first17.bytes().enumerate() {
        sum += credit_code_value(c)? * CREDIT_CODE_WEIGHTS[i];
    }
    Some(char::from(
        CREDIT_CODE_ALPHABET[credit_code_check(sum) as usize],
    ))
}

/// `assessTime` as `yyyy-MM-dd HH:mm:ss` in China Standard Time → UTC microseconds, not further in the
/// future than the allowed skew.
pub fn parse_assess_time(text: &str, now_us: i64, max_skew: Duration) -> Result<i64, Rejection> {
    parse_cst_time(
        "assessTime",
        text,
        now_us,
        max_skew,
        (Reason::InvalidAssessTime, Reason::FutureAssessTime),
    )
}

/// A time field as `yyyy-MM-dd HH:mm:ss` in China Standard Time → UTC microseconds, not further in the
/// future than the allowed skew; `reasons` are the (malformed, future) rejection reasons.
pub fn parse_cst_time(
    field: &str,
    text: &str,
    now_us: i64,
    max_skew: Duration,
    reasons: (Reason, Reason),
) -> Result<i64, Rejection> {
    let local = match canonical_time(text) {
        Some(local) => local,
        None => chrono_time(text).map_err(|e| {
            Rejection::new(
                reasons.0,
                format!("field {field} is not yyyy-MM-dd HH:mm:ss ({e})"),
            )
        })?,
    };
    let utc_us = (local.and_utc().timestamp() - CST_OFFSET_SECONDS) * 1_000_000;
    let skew_us = i64::try_from(max_skew.as_micros()).unwrap_or(i64::MAX);
    if utc_us > now_us.saturating_add(skew_us) {
        return Err(Rejection::new(
            reasons.1,
            format!(
                "field {field} (China Standard Time) is in the future by more than {}",
                humantime::format_duration(max_skew)
            ),
        ));
    }
    Ok(utc_us)
}

/// `text` as chrono parses `%Y-%m-%d %H:%M:%S`: the rule, and the answer for every time that is
/// not in the canonical shape [`canonical_time`] reads.
fn chrono_time(text: &str) -> chrono::ParseResult<chrono::NaiveDateTime> {
    // The format is parsed once; chrono then only walks its items.
    static FORMAT: std::sync::OnceLock<Vec<chrono::format::Item<'static>>> =
        std::sync::OnceLock::new();
    let items =
        FORMAT.get_or_init(|| chrono::format::StrftimeItems::new("%Y-%m-%d %H:%M:%S").collect());
    let mut parsed = chrono::format::Parsed::new();
    chrono::format::parse(&mut parsed, text, items.iter())
        .and_then(|()| parsed.to_naive_datetime_with_offset(0))
}

/// A time in the shape every platform sends (`2026-11-22 10:15:00`: 19 bytes, digits where the
/// format has them) whose fields chrono accepts as a date and a time, as [`chrono_time`] reads it;
/// `None` for anything else, which `chrono_time` then decides. chrono's general parser was 18 % of
/// validation (perf, 1 M events); this reads the usual case in a few instructions, and
/// `canonical_times_read_as_chrono_reads_them` holds it to chrono's answer.
fn canonical_time(text: &str) -> Option<chrono::NaiveDateTime> {
    let b = text.as_bytes();
    if b.len() != 19 || [b[4], b[7], b[10], b[13], b[16]] != *b"-- ::" {
        return None;
    }
    let number = |from: usize, to: usize| {
        b[from..to].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(0, 4)?).ok()?,
        number(5, 7)?,
        number(8, 10)?,
    )?
    .and_hms_opt(number(11, 13)?, number(14, 16)?, number(17, 19)?)
}

/// `evalDetail`: tag codes as a JSON array or a comma-separated string; three digits each, the first
/// being the level the tag belongs to.
pub fn parse_tags(value: Option<WireValue<'_>>, level: Satisfaction) -> Result<Tags, Rejection> {
    let mut tags = Tags::new();
    let mut push = |item: &str| -> Result<(), Rejection> {
        let item = item.trim();
        if item.is_empty() {
            return Ok(());
        }
        let tag: u16 = item
            .parse()
            .ok()
            .filter(|t| (100..=599).contains(t))
            .ok_or_else(|| {
                Rejection::new(
                    Reason::InvalidTag,
                    "field evalDetail has an item that is not a 3-digit tag code",
                )
            })?;
        if tag / 100 != u16::from(level.level()) {
            return Err(Rejection::new(
                Reason::TagLevelMismatch,
                format!(
                    "field evalDetail has a tag of level {}, but satisfaction is {}",
                    tag / 100,
                    level.level()
                ),
            ));
        }
        tags.push(tag);
        Ok(())
    };
    match value {
        None | Some(WireValue::Null) => {}
        Some(WireValue::Str(s)) => s.split(',').try_for_each(&mut push)?,
        Some(WireValue::Int(i)) => push(&i.to_string())?,
        Some(WireValue::List(items)) => {
            for item in items {
                match item {
                    WireValue::Str(s) => push(&s)?,
                    WireValue::Int(i) => push(&i.to_string())?,
                    other => {
                        return Err(Rejection::new(
                            Reason::InvalidTag,
                            format!("evalDetail items must be tag codes, got {}", other.kind()),
                        ))
                    }
                }
            }
        }
        Some(other) => {
            return Err(Rejection::new(
                Reason::InvalidField,
                format!(
                    "field evalDetail must be an array or a comma-separated string, got {}",
                    other.kind()
                ),
            ))
        }
    }
    tags.sort_unstable();
    tags.dedup();
    Ok(tags)
}

#[cfg(test)]
mod tests {
    /// The canonical reader answers as chrono does wherever it answers, and answers the shape
    /// every platform sends.
    #[test]
    fn canonical_times_read_as_chrono_reads_them() {
        let canonical = [
            "2026-11-22 10:15:00",
            "2000-01-01 00:00:00",
            "2024-02-29 23:59:59",
            "9999-12-31 23:59:59",
            "0000-01-01 00:00:00",
        ];
        for text in canonical {
            let expected = super::chrono_time(text).expect(text);
            assert_eq!(super::canonical_time(text), Some(expected), "{text}");
        }
        // Not read by the canonical reader: chrono decides (some it accepts, most it refuses).
        let others = [
            "2025-02-29 10:00:00",
            "2026-13-01 10:00:00",
            "2026-00-10 10:00:00",
            "2026-11-31 10:00:00",
            "2026-11-22 24:00:00",
            "2026-11-22 10:60:00",
            "2026-11-22 10:15:60",
            "2026-11-22T10:15:00",
            "2026-11-22 10:15",
            "2026-11-22 10:15:00 ",
            " 2026-11-22 10:15:00",
            "2026-1-22 10:15:00",
            "2026-11-2 10:15:00",
            "+2026-11-22 10:15:0",
            "2026-11-22 1:15:000",
            "２０２６-11-22 10:15",
            "2026-11-22 10:15:0a",
            "2026/11/22 10:15:00",
            "",
        ];
        for text in others {
            assert_eq!(super::canonical_time(text), None, "{text:?}");
        }
        // Every way of spoiling one byte of a canonical time: wherever the reader answers, it
        // answers as chrono.
        let base = b"2026-11-22 10:15:00";
        for at in 0..base.len() {
            for byte in (0u8..=127).chain([0xC2, 0xFF]) {
                let mut bytes = base.to_vec();
                bytes[at] = byte;
                let Ok(text) = std::str::from_utf8(&bytes) else {
                    continue;
                };
                if let Some(read) = super::canonical_time(text) {
                    assert_eq!(super::chrono_time(text).ok(), Some(read), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn the_identifier_fast_path_agrees_with_the_categories_for_every_character() {
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            assert_eq!(
                super::identifier_char_flaw(c),
                super::identifier_char_flaw_by_category(c),
                "U+{:04X}",
                c as u32
            );
        }
    }

    /// The byte scans answer "no flaw" only where the character walk finds none: every character
    /// alone, and between printable neighbours.
    #[test]
    fn the_byte_scans_never_pass_a_character_the_walk_refuses() {
        let walk_identifier = |t: &str| t.chars().find_map(super::identifier_char_flaw);
        let walk_text = |t: &str, breaks: bool| {
            t.chars()
                .any(|c| c.is_control() && !(breaks && matches!(c, '\n' | '\r' | '\t')))
        };
        let mut buffer = [0u8; 6];
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            buffer[0] = b'a';
            let len = c.encode_utf8(&mut buffer[1..]).len();
            buffer[1 + len] = b'b';
            let alone = &buffer[1..1 + len];
            let between = &buffer[..2 + len];
            for text in [alone, between].map(|b| std::str::from_utf8(b).unwrap()) {
                assert_eq!(
                    super::identifier_flaw(text).is_some(),
                    walk_identifier(text).is_some(),
                    "identifier U+{:04X}",
                    c as u32
                );
                for breaks in [false, true] {
                    assert_eq!(
                        super::text_flaw(text, breaks).is_some(),
                        walk_text(text, breaks),
                        "text U+{:04X}",
                        c as u32
                    );
                }
                assert_eq!(super::is_blank(text), text.trim().is_empty(), "{text:?}");
            }
        }
        for text in ["", " ", "\u{3000}", " a", "a ", "\t\n", "\u{85}x", "x"] {
            assert_eq!(super::is_blank(text), text.trim().is_empty(), "{text:?}");
        }
    }

    use super::*;
    use crate::decode::decode;

    /// 2026-11-22 12:00:00 CST.
    const NOW_US: i64 = 1_795_320_000_000_000;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "projectNo": "410328-2026-000001",
            "taskCode": "11410328MB1234567X4000117004000",
            "taskName": "城乡居民基本养老保险参保登记",
            "deptCode": "11410328MB00000015",
            "deptName": "洛宁县人力资源和社会保障局",
            "areaCode": "410328100201",
            "pf": "4",
            "satisfaction": "5",
            "evalDetail": "510,511",
            "writingEvaluation": "窗口人员服务热情",
            "assessTime": "2026-11-22 10:15:00",
            "assessNumber": 1,
            "userProp": "1",
            "userName": "张三",
            "userCert": "410328199001011234",
            "userPhone": "13800000000",
            "anonymityFlag": "2",
            "staffId": "LN0012",
            "staffName": "李四"
        })
    }

    fn run(
        edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) -> Result<(), Rejection> {
        let mut value = base();
        edit(value.as_object_mut().unwrap());
        let bytes = serde_json::to_vec(&value).unwrap();
        let wire = decode(&bytes, 1 << 20)?;
        validate(wire, &ValidationRules::default(), NOW_US).map(|_| ())
    }

    #[test]
    fn fixture_credit_code_is_valid() {
        let code = format!("11410328MB000000{}", 1);
        let check = credit_code_check_char(&code).unwrap();
        assert_eq!(format!("{code}{check}"), "11410328MB00000015");
    }

    #[test]
    fn accepts_a_complete_evaluation() {
        let bytes = serde_json::to_vec(&base()).unwrap();
        let e = validate(
            decode(&bytes, 1 << 20).unwrap(),
            &ValidationRules::default(),
            NOW_US,
        )
        .unwrap();
        assert_eq!(e.project_no, "410328-2026-000001");
        assert_eq!(e.satisfaction.level(), 5);
        assert_eq!(e.channel, Channel::HallWindow);
        assert_eq!(e.assess_number, AssessNumber::First);
        assert_eq!(e.tags.as_slice(), [510, 511]);
        assert!(!e.anonymous);
        // 10:15 CST is 02:15 UTC.
        assert_eq!(e.assessed_at_us, 1_795_313_700_000_000);
        assert_eq!(e.evaluator_kind, EvaluatorKind::NaturalPerson);
        assert_eq!(e.identity.cert.as_deref(), Some("410328199001011234"));
    }

    type Edit = fn(&mut serde_json::Map<String, serde_json::Value>);

    #[test]
    fn each_rule_accepts_and_rejects() {
        use serde_json::json;
        let table: &[(&str, Edit, Option<Reason>)] = &[
            (
                "numbers as codes",
                |m| {
                    m.insert("pf".into(), json!(2));
                    m.insert("satisfaction".into(), json!(5));
                },
                None,
            ),
            (
                "missing projectNo",
                |m| {
                    m.remove("projectNo");
                },
                Some(Reason::MissingField),
            ),
            (
                "blank projectNo",
                |m| {
                    m.insert("projectNo".into(), json!("  "));
                },
                Some(Reason::MissingField),
            ),
            (
                "projectNo object",
                |m| {
                    m.insert("projectNo".into(), json!({"a":1}));
                },
                Some(Reason::InvalidField),
            ),
            (
                "missing taskCode",
                |m| {
                    m.remove("taskCode");
                },
                Some(Reason::MissingField),
            ),
            (
                "missing taskName",
                |m| {
                    m.remove("taskName");
                },
                Some(Reason::MissingField),
            ),
            (
                "missing deptCode",
                |m| {
                    m.remove("deptCode");
                },
                Some(Reason::MissingField),
            ),
            (
                "missing areaCode",
                |m| {
                    m.remove("areaCode");
                },
                Some(Reason::MissingField),
            ),
            (
                "missing assessTime",
                |m| {
                    m.remove("assessTime");
                },
                Some(Reason::MissingField),
            ),
            (
                "missing pf",
                |m| {
                    m.remove("pf");
                },
                Some(Reason::MissingField),
            ),
            (
                "missing satisfaction",
                |m| {
                    m.remove("satisfaction");
                },
                Some(Reason::MissingField),
            ),
            (
                "missing assessNumber",
                |m| {
                    m.remove("assessNumber");
                },
                Some(Reason::MissingField),
            ),
            (
                "missing userProp",
                |m| {
                    m.remove("userProp");
                },
                Some(Reason::MissingField),
            ),
            (
                "pf 8",
                |m| {
                    m.insert("pf".into(), json!("8"));
                },
                Some(Reason::InvalidCode),
            ),
            (
                "pf 0",
                |m| {
                    m.insert("pf".into(), json!(0));
                },
                Some(Reason::InvalidCode),
            ),
            (
                "pf 7 sms",
                |m| {
                    m.insert("pf".into(), json!(7));
                },
                None,
            ),
            (
                "satisfaction 6",
                |m| {
                    m.insert("satisfaction".into(), json!(6));
                },
                Some(Reason::InvalidCode),
            ),
            (
                "satisfaction 0",
                |m| {
                    m.insert("satisfaction".into(), json!("0"));
                },
                Some(Reason::InvalidCode),
            ),
            (
                "satisfaction 4.5",
                |m| {
                    m.insert("satisfaction".into(), json!(4.5));
                },
                Some(Reason::InvalidCode),
            ),
            (
                "satisfaction word",
                |m| {
                    m.insert("satisfaction".into(), json!("满意"));
                },
                Some(Reason::InvalidCode),
            ),
            (
                "assessNumber 2",
                |m| {
                    m.insert("assessNumber".into(), json!("2"));
                },
                None,
            ),
            (
                "assessNumber 3",
                |m| {
                    m.insert("assessNumber".into(), json!(3));
                },
                Some(Reason::InvalidCode),
            ),
            (
                "userProp 9",
                |m| {
                    m.insert("userProp".into(), json!(9));
                },
                None,
            ),
            (
                "userProp 7",
                |m| {
                    m.insert("userProp".into(), json!(7));
                },
                Some(Reason::InvalidCode),
            ),
            (
                "anonymityFlag 1",
                |m| {
                    m.insert("anonymityFlag".into(), json!(1));
                },
                None,
            ),
            (
                "anonymityFlag absent",
                |m| {
                    m.remove("anonymityFlag");
                },
                None,
            ),
            (
                "anonymityFlag 3",
                |m| {
                    m.insert("anonymityFlag".into(), json!(3));
                },
                Some(Reason::InvalidCode),
            ),
            (
                "areaCode province",
                |m| {
                    m.insert("areaCode".into(), json!("410000000000"));
                },
                None,
            ),
            (
                "areaCode short",
                |m| {
                    m.insert("areaCode".into(), json!("410328"));
                },
                Some(Reason::InvalidAreaCode),
            ),
            (
                "areaCode letters",
                |m| {
                    m.insert("areaCode".into(), json!("41032810020X"));
                },
                Some(Reason::InvalidAreaCode),
            ),
            (
                "areaCode gap",
                |m| {
                    m.insert("areaCode".into(), json!("410300100201"));
                },
                Some(Reason::InvalidAreaCode),
            ),
            (
                "areaCode as number",
                |m| {
                    m.insert("areaCode".into(), json!(410328100201_i64));
                },
                None,
            ),
            (
                "deptCode check",
                |m| {
                    m.insert("deptCode".into(), json!("11410328MB0000001A"));
                },
                Some(Reason::InvalidDeptCode),
            ),
            (
                "deptCode length",
                |m| {
                    m.insert("deptCode".into(), json!("11410328MB0000001"));
                },
                Some(Reason::InvalidDeptCode),
            ),
            (
                "deptCode letter I",
                |m| {
                    m.insert("deptCode".into(), json!("11410328IB0000001T"));
                },
                Some(Reason::InvalidDeptCode),
            ),
            (
                "deptCode lowercase",
                |m| {
                    m.insert("deptCode".into(), json!("11410328mb0000001t"));
                },
                Some(Reason::InvalidDeptCode),
            ),
            (
                "assessTime ISO T",
                |m| {
                    m.insert("assessTime".into(), json!("2026-11-22T10:15:00"));
                },
                Some(Reason::InvalidAssessTime),
            ),
            (
                "assessTime date only",
                |m| {
                    m.insert("assessTime".into(), json!("2026-11-22"));
                },
                Some(Reason::InvalidAssessTime),
            ),
            (
                "assessTime Feb 30",
                |m| {
                    m.insert("assessTime".into(), json!("2026-02-30 10:00:00"));
                },
                Some(Reason::InvalidAssessTime),
            ),
            (
                "assessTime within skew",
                |m| {
                    m.insert("assessTime".into(), json!("2026-11-22 12:04:00"));
                },
                None,
            ),
            (
                "assessTime future",
                |m| {
                    m.insert("assessTime".into(), json!("2026-11-22 12:06:00"));
                },
                Some(Reason::FutureAssessTime),
            ),
            (
                "tags as array",
                |m| {
                    m.insert("evalDetail".into(), json!(["510", 512]));
                },
                None,
            ),
            (
                "tags empty",
                |m| {
                    m.insert("evalDetail".into(), json!(""));
                },
                None,
            ),
            (
                "tag of other level",
                |m| {
                    m.insert("evalDetail".into(), json!("510,406"));
                },
                Some(Reason::TagLevelMismatch),
            ),
            (
                "tag not a code",
                |m| {
                    m.insert("evalDetail".into(), json!("51a"));
                },
                Some(Reason::InvalidTag),
            ),
            (
                "tag 4 digits",
                |m| {
                    m.insert("evalDetail".into(), json!("5100"));
                },
                Some(Reason::InvalidTag),
            ),
            (
                "tags object",
                |m| {
                    m.insert("evalDetail".into(), json!({"t": 1}));
                },
                Some(Reason::InvalidField),
            ),
            (
                "text at limit",
                |m| {
                    m.insert("writingEvaluation".into(), json!("好".repeat(2000)));
                },
                None,
            ),
            (
                "text too long",
                |m| {
                    m.insert("writingEvaluation".into(), json!("好".repeat(2001)));
                },
                Some(Reason::TextTooLong),
            ),
            (
                "bad review with tag",
                |m| {
                    m.insert("satisfaction".into(), json!(1));
                    m.insert("evalDetail".into(), json!("115"));
                    m.insert("writingEvaluation".into(), json!(""));
                },
                None,
            ),
            (
                "bad review with text",
                |m| {
                    m.insert("satisfaction".into(), json!(2));
                    m.remove("evalDetail");
                    m.insert("writingEvaluation".into(), json!("排队两小时"));
                },
                None,
            ),
            (
                "bad review without reason",
                |m| {
                    m.insert("satisfaction".into(), json!(1));
                    m.remove("evalDetail");
                    m.insert("writingEvaluation".into(), json!(" "));
                },
                Some(Reason::BadReviewWithoutReason),
            ),
            (
                "name too long",
                |m| {
                    m.insert("userName".into(), json!("张".repeat(201)));
                },
                Some(Reason::InvalidField),
            ),
            (
                "evaluatorKey of ours, identity removed",
                |m| {
                    for field in ["userName", "userCert", "userPhone"] {
                        m.remove(field);
                    }
                    m.insert("evaluatorKey".into(), json!("0a".repeat(32)));
                },
                None,
            ),
            (
                "evaluatorKey with clear identity",
                |m| {
                    m.insert("evaluatorKey".into(), json!("0a".repeat(32)));
                },
                Some(Reason::InvalidField),
            ),
            (
                "evaluatorKey an ID number",
                |m| {
                    m.remove("userCert");
                    m.insert("evaluatorKey".into(), json!("410328199001011234"));
                },
                Some(Reason::InvalidField),
            ),
            (
                "evaluatorKey as a number",
                |m| {
                    m.remove("userCert");
                    m.insert("evaluatorKey".into(), json!(410328199001011234_i64));
                },
                Some(Reason::InvalidField),
            ),
            (
                "evaluatorKey uppercase",
                |m| {
                    for field in ["userName", "userCert", "userPhone"] {
                        m.remove(field);
                    }
                    m.insert("evaluatorKey".into(), json!("0A".repeat(32)));
                },
                Some(Reason::InvalidField),
            ),
            (
                "projectNo with U+202E",
                |m| {
                    m.insert("projectNo".into(), json!("410328-2026-\u{202E}100000"));
                },
                Some(Reason::InvalidField),
            ),
            (
                "projectNo with a space",
                |m| {
                    m.insert("projectNo".into(), json!("410328 2026"));
                },
                Some(Reason::InvalidField),
            ),
            (
                "projectNo padded",
                |m| {
                    m.insert("projectNo".into(), json!("410328-2026-000001 "));
                },
                Some(Reason::InvalidField),
            ),
            (
                "taskCode with zero-width space",
                |m| {
                    m.insert(
                        "taskCode".into(),
                        json!("11410328MB1234567X\u{200B}4000117004000"),
                    );
                },
                Some(Reason::InvalidField),
            ),
            (
                "deptCode with BOM",
                |m| {
                    m.insert("deptCode".into(), json!("\u{FEFF}11410328MB00000015"));
                },
                Some(Reason::InvalidField),
            ),
            (
                "areaCode with LRM",
                |m| {
                    m.insert("areaCode".into(), json!("410328100201\u{200E}"));
                },
                Some(Reason::InvalidField),
            ),
            (
                "staffId with NUL",
                |m| {
                    m.insert("staffId".into(), json!("LN\u{0}0012"));
                },
                Some(Reason::InvalidField),
            ),
            (
                "staffId as a number",
                |m| {
                    m.insert("staffId".into(), json!(12));
                },
                None,
            ),
            (
                "staffName with a newline",
                |m| {
                    m.insert("staffName".into(), json!("李\n四"));
                },
                Some(Reason::InvalidField),
            ),
            (
                "taskName with ESC",
                |m| {
                    m.insert("taskName".into(), json!("登记\u{1B}[2J"));
                },
                Some(Reason::InvalidField),
            ),
            (
                "deptName with a space",
                |m| {
                    m.insert("deptName".into(), json!("洛宁县 人社局"));
                },
                None,
            ),
            (
                "text with line breaks and tabs",
                |m| {
                    m.insert("writingEvaluation".into(), json!("很好\r\n\t谢谢"));
                },
                None,
            ),
            (
                "text with NUL",
                |m| {
                    m.insert("writingEvaluation".into(), json!("很好\u{0}"));
                },
                Some(Reason::InvalidField),
            ),
            (
                "text with emoji ZWJ and RLM",
                |m| {
                    m.insert(
                        "writingEvaluation".into(),
                        json!("👨\u{200D}👩\u{200D}👧 ياخشى\u{200F}"),
                    );
                },
                None,
            ),
        ];
        for (name, edit, expected) in table {
            let got = run(*edit);
            assert_eq!(
                got.as_ref().err().map(|r| r.reason),
                *expected,
                "{name}: {got:?}"
            );
            if let Err(rejection) = got {
                assert!(!rejection.message.is_empty(), "{name}");
            }
        }
    }

    #[test]
    fn identifiers_hold_no_invisible_character() {
        let table: &[(&str, Option<(usize, char)>)] = &[
            ("410328-2026-000001", None),
            ("11410328MB00000015", None),
            ("LN0012", None),
            ("洛宁县2026第001号", None),
            ("ＬＮ００１２", None),
            ("", None),
            ("P\u{202A}1", Some((1, '\u{202A}'))),
            ("P\u{202B}1", Some((1, '\u{202B}'))),
            ("P\u{202C}1", Some((1, '\u{202C}'))),
            ("P\u{202D}1", Some((1, '\u{202D}'))),
            ("P\u{202E}1", Some((1, '\u{202E}'))),
            ("P\u{2066}1", Some((1, '\u{2066}'))),
            ("P\u{2067}1", Some((1, '\u{2067}'))),
            ("P\u{2068}1", Some((1, '\u{2068}'))),
            ("P\u{2069}1", Some((1, '\u{2069}'))),
            ("P\u{200E}1", Some((1, '\u{200E}'))),
            ("P\u{200F}1", Some((1, '\u{200F}'))),
            ("P\u{061C}1", Some((1, '\u{061C}'))),
            ("P\u{200B}1", Some((1, '\u{200B}'))),
            ("P\u{200C}1", Some((1, '\u{200C}'))),
            ("P\u{200D}1", Some((1, '\u{200D}'))),
            ("P\u{2060}1", Some((1, '\u{2060}'))),
            ("\u{FEFF}P1", Some((0, '\u{FEFF}'))),
            ("P\u{00AD}1", Some((1, '\u{00AD}'))),
            ("P1\u{0}", Some((2, '\u{0}'))),
            ("P\u{7F}1", Some((1, '\u{7F}'))),
            ("P\u{85}1", Some((1, '\u{85}'))),
            ("P\u{9B}1", Some((1, '\u{9B}'))),
            ("P\u{2028}1", Some((1, '\u{2028}'))),
            ("P\u{2029}1", Some((1, '\u{2029}'))),
            ("P 1", Some((1, ' '))),
            ("P\t1", Some((1, '\t'))),
            ("P\n1", Some((1, '\n'))),
            (" P1", Some((0, ' '))),
            ("P1\u{3000}", Some((2, '\u{3000}'))),
            ("P\u{A0}1", Some((1, '\u{A0}'))),
            ("P\u{E0041}1", Some((1, '\u{E0041}'))),
            ("P\u{FE0F}1", Some((1, '\u{FE0F}'))),
            ("P\u{3164}1", Some((1, '\u{3164}'))),
            ("P\u{034F}1", Some((1, '\u{034F}'))),
            ("张\u{202E}三", Some((1, '\u{202E}'))),
        ];
        for (text, expected) in table {
            let got = identifier_flaw(text).map(|f| (f.at, f.char));
            assert_eq!(got, *expected, "{text:?}");
        }
    }

    #[test]
    fn names_and_text_hold_no_control_character() {
        // (text, line breaks allowed, first flaw at (position, character))
        type Row = (&'static str, bool, Option<(usize, char)>);
        let table: &[Row] = &[
            ("窗口人员服务热情", false, None),
            ("洛宁县 人社局", false, None),
            ("张三\n", false, Some((2, '\n'))),
            ("张\t三", false, Some((1, '\t'))),
            ("很好\r\n谢谢\t!", true, None),
            ("很好\u{0}", true, Some((2, '\u{0}'))),
            ("\u{1B}[31m红", true, Some((0, '\u{1B}'))),
            ("好\u{7F}", true, Some((1, '\u{7F}'))),
            ("好\u{85}", true, Some((1, '\u{85}'))),
            // Format characters are part of ordinary text (emoji ZWJ, Arabic-script marks).
            ("👨\u{200D}👩", false, None),
            ("ياخشى\u{200F}", true, None),
            ("a\u{2028}b", true, None),
        ];
        for (text, line_breaks, expected) in table {
            let got = text_flaw(text, *line_breaks).map(|f| (f.at, f.char));
            assert_eq!(got, *expected, "{text:?}");
        }
    }

    #[test]
    fn rejection_messages_never_echo_the_value() {
        use serde_json::json;
        let id = "110101199003071234";
        let fields = [
            "projectNo",
            "taskCode",
            "taskName",
            "deptCode",
            "deptName",
            "areaCode",
            "pf",
            "satisfaction",
            "evalDetail",
            "writingEvaluation",
            "assessTime",
            "assessNumber",
            "userProp",
            "anonymityFlag",
            "staffId",
            "staffName",
            "evaluatorKey",
        ];
        let values = [
            json!(id),
            json!(id.parse::<i64>().unwrap()),
            json!([id]),
            json!({ "cert": id }),
            json!(format!("{id}\u{202E}")),
            json!(format!("{id}\u{0}")),
            json!(format!("5,{id}")),
            json!(format!("2026-01-01 00:00:00{id}")),
            json!(id.repeat(12)),
        ];
        let mut rejected = 0;
        for field in fields {
            for value in &values {
                let Err(rejection) = run(|m| {
                    m.insert(field.to_owned(), value.clone());
                }) else {
                    continue;
                };
                rejected += 1;
                for part in id.as_bytes().windows(6) {
                    let part = std::str::from_utf8(part).unwrap();
                    assert!(
                        !rejection.message.contains(part),
                        "{field} = {value}: {:?}",
                        rejection.message
                    );
                }
            }
        }
        assert!(
            rejected > 90,
            "the values are wrong for most fields: {rejected}"
        );
    }

    #[test]
    fn credit_code_known_examples() {
        // The example code printed in GB 32100 explanations.
        assert!(check_credit_code("91350100M000100Y43").is_ok());
        assert_eq!(credit_code_check_char("91350100M000100Y4"), Some('3'));
        assert!(check_credit_code("91350100M000100Y44").is_err());
    }

    #[test]
    fn assess_time_is_china_standard_time() {
        let us = parse_assess_time("2026-01-01 08:00:00", i64::MAX, Duration::ZERO).unwrap();
        assert_eq!(
            us, 1_767_225_600_000_000,
            "08:00 CST on 1 January is midnight UTC"
        );
    }
}
