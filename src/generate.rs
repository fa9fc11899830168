//! A realistic province for tests, benchmarks and the demo: real division codes of one province,
//! departments with valid credit codes, their service items and window staff, the national channel
//! mix, a satisfaction distribution where bad reviews are rare, tags of the right level and Chinese
//! free text; plus, on request, redeliveries and malformed records. Deterministic for a seed.
//!
//! Every generated event says what the engine must do with it ([`Expected`]), so a test can compare
//! the lake with the exact set of evaluations that should be there.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::num::NonZeroU32;
use std::time::Duration;

use crate::config::KafkaConfig;
use chrono::{NaiveDate, NaiveDateTime};
use governor::{Quota, RateLimiter};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde::Serialize;

use crate::decode::Reason;
use crate::region::{RegionCode, RegionLevel, RegionTable, RegionTableError};
use crate::transform::validate::credit_code_check_char;

/// What the engine must do with a generated event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expected {
    Accepted,
    Duplicate,
    DeadLetter(Reason),
}

/// One generated Kafka message.
#[derive(Debug, Clone)]
pub struct GeneratedEvent {
    /// The message key: the case number, as producers must key evaluations.
    pub key: String,
    pub payload: Vec<u8>,
    pub expected: Expected,
    /// The (`projectNo`, `assessNumber`) slot an accepted event fills.
    pub slot: Option<(String, u8)>,
}

/// Settings of the generator.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Two-digit province code (`41` Henan, `35` Fujian, `22` Jilin, `53` Yunnan…).
    pub province: String,
    /// The evaluation date (CST) of the generated day.
    pub day: NaiveDate,
    pub seed: u64,
    /// Share of events that are identical redeliveries of an earlier accepted event.
    pub dup_rate: f64,
    /// Share of events that are malformed or invalid (each with one known reason).
    pub bad_rate: f64,
    /// Share of valid events that are a case's supplementary evaluation.
    pub supplementary_rate: f64,
}

impl GeneratorConfig {
    pub fn new(province: &str, day: NaiveDate) -> Self {
        Self {
            province: province.to_owned(),
            day,
            seed: 2026,
            dup_rate: 0.0,
            bad_rate: 0.0,
            supplementary_rate: 0.03,
        }
    }
}

/// Errors of generation and producing.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Regions(#[from] RegionTableError),
    #[error("province {0:?} has no regions in the {1} division-code table")]
    UnknownProvince(String, String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("--rate must be at least 1 event/s")]
    Rate,
}

struct Department {
    code: String,
    name: String,
    area: RegionCode,
    items: Vec<(String, &'static str)>,
    staff: Vec<(String, String)>,
}

/// Department kinds with the service items they handle.
const DEPARTMENTS: &[(&str, &[&str])] = &[
    (
        "人力资源和社会保障局",
        &[
            "城乡居民基本养老保险参保登记",
            "失业保险金申领",
            "社会保障卡申领",
            "就业创业证申领",
            "职业资格证书核发",
        ],
    ),
    (
        "市场监督管理局",
        &[
            "企业设立登记",
            "个体工商户注册登记",
            "食品经营许可",
            "企业变更登记",
            "药品零售许可",
        ],
    ),
    (
        "公安局",
        &[
            "居民身份证换领",
            "户口迁移",
            "出入境证件办理",
            "机动车驾驶证换证",
            "居住证办理",
        ],
    ),
    (
        "自然资源局",
        &[
            "不动产首次登记",
            "不动产转移登记",
            "不动产抵押登记",
            "建设用地规划许可",
        ],
    ),
    (
        "医疗保障局",
        &[
            "医保关系转移接续",
            "异地就医备案",
            "生育保险待遇申领",
            "门诊慢特病认定",
        ],
    ),
    (
        "民政局",
        &[
            "结婚登记",
            "最低生活保障申请",
            "高龄津贴申领",
            "社会团体成立登记",
        ],
    ),
    (
        "卫生健康委员会",
        &["出生医学证明办理", "医师执业注册", "公共场所卫生许可"],
    ),
    (
        "住房和城乡建设局",
        &["建筑工程施工许可", "商品房预售许可", "住房公积金提取"],
    ),
    (
        "交通运输局",
        &[
            "道路运输经营许可",
            "出租汽车驾驶员从业资格",
            "网络预约出租汽车运输证",
        ],
    ),
    (
        "税务局",
        &["发票领用", "增值税申报", "个人所得税汇算", "税务登记"],
    ),
];

const TEXTS: [&[&str]; 5] = [
    &[
        "跑了五趟还没办成，窗口互相推诿",
        "工作人员态度恶劣，问三句不答一句",
        "明明材料齐全却说要补交证明，耽误了一个月",
    ],
    &[
        "等了两个多小时才轮到",
        "指南上没写的材料也要求提供",
        "网上系统一直提交失败，只能跑现场",
    ],
    &[
        "整体还可以，就是排队时间有点长",
        "材料要求再简化一些就更好了",
        "",
    ],
    &["办理挺顺利的", "工作人员解释得很清楚", "比以前方便多了", ""],
    &[
        "一次就办好了，非常感谢",
        "窗口工作人员热情耐心，点赞",
        "全程网办，不用跑腿，太方便了",
        "服务很好",
        "",
    ],
];

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "林", "高", "罗",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀英", "华", "建国", "志强", "淑珍",
];

/// The generated province.
pub struct Province {
    areas: Vec<RegionCode>,
    departments: Vec<Department>,
}

impl Province {
    /// Builds a province from the shipped division-code table.
    pub fn new(
        table: &RegionTable,
        province: &str,
        rng: &mut StdRng,
    ) -> Result<Self, GenerateError> {
        let regions: Vec<_> = table.in_province(province).collect();
        if regions.is_empty() {
            return Err(GenerateError::UnknownProvince(
                province.to_owned(),
                table.edition().to_owned(),
            ));
        }
        let counties: Vec<_> = regions
            .iter()
            .filter(|r| matches!(r.level, RegionLevel::County | RegionLevel::City))
            .collect();
        let mut departments = Vec::new();
        for (index, county) in counties.iter().enumerate() {
            for (kind, items) in DEPARTMENTS {
                let org: String = (0..8)
                    .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                    .collect();
                let org = format!("{org}{}", organisation_check_char(&org));
                let county6 = &county.code.as_str()[..6];
                let first17 = format!("11{county6}{org}");
                let Some(check) = credit_code_check_char(&first17) else {
                    continue;
                };
                let code = format!("{first17}{check}");
                let task_items = items
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (format!("{code}40001{:02}{:03}", index % 100, i), *name))
                    .collect();
                let staff = (0..rng.random_range(3..9))
                    .map(|n| {
                        let id =
                            format!("{}{:02}{:03}", &county6[2..6], departments.len() % 100, n);
                        (id, person_name(rng))
                    })
                    .collect();
                departments.push(Department {
                    code,
                    name: format!("{}{kind}", county.name),
                    area: county.code,
                    items: task_items,
                    staff,
                });
            }
        }
        // Evaluations come from halls at every level; townships and villages dominate by count.
        let areas = regions.iter().map(|r| r.code).collect();
        Ok(Self { areas, departments })
    }
}

/// GB 11714 check character of an 8-digit organisation code.
fn organisation_check_char(first8: &str) -> char {
    const WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first8
        .bytes()
        .zip(WEIGHTS)
        .map(|(c, w)| u32::from(c - b'0') * w)
        .sum();
    match 11 - sum % 11 {
        10 => 'X',
        11 => '0',
        n => char::from(b'0' + n as u8),
    }
}

fn person_name(rng: &mut StdRng) -> String {
    format!(
        "{}{}",
        SURNAMES.choose(rng).unwrap_or(&"王"),
        GIVEN.choose(rng).unwrap_or(&"伟")
    )
}

/// The wire form the generator sends (the national interface's field names).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireOut {
    project_no: String,
    task_code: String,
    task_name: String,
    dept_code: String,
    dept_name: String,
    area_code: String,
    pf: String,
    satisfaction: String,
    eval_detail: String,
    writing_evaluation: String,
    assess_time: String,
    assess_number: u8,
    user_prop: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_phone: Option<String>,
    anonymity_flag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    staff_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    staff_name: Option<String>,
}

/// An endless, deterministic stream of evaluation events.
pub struct Generator {
    config: GeneratorConfig,
    rng: StdRng,
    province: Province,
    sequence: u64,
    /// Recently accepted events: the source of redeliveries and conflicting re-evaluations.
    recent: VecDeque<(WireOut, Vec<u8>)>,
    /// Cases that already have their one supplementary evaluation.
    supplemented: std::collections::HashSet<String>,
    /// Per county, the areas below it (in table order), found once instead of per event.
    areas_below: HashMap<String, Vec<RegionCode>>,
}

/// The lifecycle of the case a generated first evaluation is of: its generated, accepted and
/// finished records (`proStatus` 1, 2, 3), each before the evaluation, as `(key, payload)` keyed by
/// `projectNo` like the evaluation. Empty for anything but an accepted first evaluation (a
/// supplementary evaluation's case was reported with its first). Deterministic: the times come from
/// the case number.
pub fn case_lifecycle(event: &GeneratedEvent) -> Vec<(String, Vec<u8>)> {
    if event.expected != Expected::Accepted || event.slot.as_ref().is_some_and(|(_, n)| *n != 1) {
        return Vec::new();
    }
    match serde_json::from_slice::<WireOut>(&event.payload) {
        Ok(wire) => lifecycle_of(&wire),
        Err(_) => Vec::new(),
    }
}

fn lifecycle_of(wire: &WireOut) -> Vec<(String, Vec<u8>)> {
    let Ok(assessed) = NaiveDateTime::parse_from_str(&wire.assess_time, "%Y-%m-%d %H:%M:%S") else {
        return Vec::new();
    };
    let spread = xxhash_rust::xxh3::xxh3_64(wire.project_no.as_bytes());
    // Finished up to 3 hours before the evaluation; accepted up to 2 days before that (an on-the-spot
    // case within the hour); generated up to an hour before acceptance.
    let on_the_spot = spread.is_multiple_of(3);
    let minutes =
        |bits: u64, max: u64| chrono::Duration::minutes(((spread >> bits) % max) as i64 + 1);
    let finished = assessed - minutes(2, 180);
    let accepted = finished
        - if on_the_spot {
            minutes(10, 60)
        } else {
            minutes(10, 2 * 24 * 60)
        };
    let applied = accepted - minutes(24, 60);
    let format = |t: NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let mut record = serde_json::json!({
        "projectNo": wire.project_no,
        "taskCode": wire.task_code,
        "taskName": wire.task_name,
        "deptCode": wire.dept_code,
        "deptName": wire.dept_name,
        "areaCode": wire.area_code,
        "projectType": if on_the_spot { 1 } else { 2 },
        "userProp": wire.user_prop,
        "applyDate": format(applied),
    });
    for (field, value) in [
        ("userName", &wire.user_name),
        ("userCert", &wire.user_cert),
        ("userPhone", &wire.user_phone),
    ] {
        if let Some(value) = value {
            record[field] = serde_json::Value::from(value.as_str());
        }
    }
    let mut records = Vec::with_capacity(3);
    for status in 1..=3 {
        record["proStatus"] = serde_json::Value::from(status);
        if status >= 2 {
            record["acceptDate"] = serde_json::Value::from(format(accepted));
        }
        if status == 3 {
            record["resultDate"] = serde_json::Value::from(format(finished));
        }
        records.push((
            wire.project_no.clone(),
            serde_json::to_vec(&record).unwrap_or_default(),
        ));
    }
    records
}

/// The workflow of a generated bad review (satisfaction 1 or 2), as `(key, payload)` in the order the
/// steps happen, keyed by `projectNo`. Its course comes from the case number (deterministic): most
/// are forwarded within the hour, replied and rectified within days, and revisited; some are
/// forwarded late, some never rectified, some appealed and found mistaken or malicious (excluded),
/// some left untouched. Steps after `horizon` (China time) have not happened yet and are left out.
/// Empty for anything but an accepted first bad review.
pub fn workflow_of(event: &GeneratedEvent, horizon: NaiveDateTime) -> Vec<(String, Vec<u8>)> {
    if event.expected != Expected::Accepted || event.slot.as_ref().is_some_and(|(_, n)| *n != 1) {
        return Vec::new();
    }
    let Ok(wire) = serde_json::from_slice::<WireOut>(&event.payload) else {
        return Vec::new();
    };
    if !matches!(wire.satisfaction.as_str(), "1" | "2") {
        return Vec::new();
    }
    let Ok(given) = NaiveDateTime::parse_from_str(&wire.assess_time, "%Y-%m-%d %H:%M:%S") else {
        return Vec::new();
    };
    let spread = xxhash_rust::xxh3::xxh3_64(wire.project_no.as_bytes());
    let hours = |h: i64| chrono::Duration::hours(h);
    let minutes =
        |bits: u64, max: u64| chrono::Duration::minutes(((spread >> bits) % max) as i64 + 5);
    // (step, time, extra fields)
    let mut steps: Vec<(&str, NaiveDateTime, serde_json::Value)> = Vec::new();
    let none = serde_json::json!({});
    match spread % 20 {
        // Untouched.
        0 => {}
        // Forwarded, then nothing: it will be overdue and escalated.
        1 | 2 => steps.push(("forwarded", given + minutes(8, 60), none.clone())),
        // Appealed, reviewed and found mistaken or malicious: excluded from every rate.
        3 | 4 => {
            let forwarded = given + minutes(8, 60);
            steps.push(("forwarded", forwarded, none.clone()));
            steps.push(("appealed", forwarded + hours(2), none.clone()));
            steps.push(("review_applied", forwarded + hours(3), none.clone()));
            let decision = if spread % 20 == 3 {
                "mistaken"
            } else {
                "malicious"
            };
            steps.push((
                "review_decided",
                forwarded + hours(26),
                serde_json::json!({"decision": decision}),
            ));
        }
        // Forwarded three days late, then the usual course.
        5..=7 => {
            let forwarded = given + hours(72) + minutes(8, 60);
            steps.push(("forwarded", forwarded, none.clone()));
            steps.push(("replied", forwarded + hours(20), none.clone()));
            steps.push(("rectified", forwarded + hours(40), none.clone()));
        }
        // The usual course: forwarded within the hour, contacted, replied, rectified, revisited.
        _ => {
            let forwarded = given + minutes(8, 60);
            steps.push((
                "forwarded",
                forwarded,
                serde_json::json!({"complex": spread.is_multiple_of(7)}),
            ));
            steps.push(("contacted", forwarded + hours(3), none.clone()));
            steps.push(("replied", forwarded + hours(20), none.clone()));
            let rectified = forwarded + hours(30) + minutes(16, 600);
            steps.push(("rectified", rectified, none.clone()));
            steps.push(("reported_back", rectified + hours(20), none.clone()));
            steps.push((
                "revisited",
                rectified + hours(48),
                serde_json::json!({"newSatisfaction": 3 + (spread >> 32) % 3}),
            ));
        }
    }
    steps
        .into_iter()
        .filter(|(_, at, _)| *at <= horizon)
        .map(|(step, at, extra)| {
            let mut record = serde_json::json!({
                "projectNo": wire.project_no,
                "assessNumber": 1,
                "eventType": step,
                "eventTime": at.format("%Y-%m-%d %H:%M:%S").to_string(),
            });
            if let Some(fields) = extra.as_object() {
                for (k, v) in fields {
                    record[k] = v.clone();
                }
            }
            (
                wire.project_no.clone(),
                serde_json::to_vec(&record).unwrap_or_default(),
            )
        })
        .collect()
}

/// Channels with their share (`pf` code, weight): window devices lead, the hotline is small.
const CHANNEL_MIX: &[(u8, u32)] = &[(4, 42), (2, 24), (1, 10), (3, 9), (5, 7), (6, 5), (7, 3)];
/// Satisfaction levels with their share in 10 000: bad reviews (1–2) are about 1.3%.
const SATISFACTION_MIX: &[(u8, u32)] = &[(5, 6400), (4, 1900), (3, 1570), (2, 80), (1, 50)];

impl Generator {
    pub fn new(config: GeneratorConfig) -> Result<Self, GenerateError> {
        Self::with_table(config, RegionTable::shipped()?)
    }

    pub fn with_table(config: GeneratorConfig, table: &RegionTable) -> Result<Self, GenerateError> {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let province = Province::new(table, &config.province, &mut rng)?;
        Ok(Self {
            config,
            rng,
            province,
            sequence: 0,
            recent: VecDeque::with_capacity(4096),
            supplemented: Default::default(),
            areas_below: HashMap::new(),
        })
    }

    /// The next event.
    pub fn next_event(&mut self) -> GeneratedEvent {
        let roll: f64 = self.rng.random();
        if roll < self.config.dup_rate {
            if let Some((wire, payload)) = self.pick_recent() {
                return GeneratedEvent {
                    key: wire.project_no,
                    payload,
                    expected: Expected::Duplicate,
                    slot: None,
                };
            }
        } else if roll < self.config.dup_rate + self.config.bad_rate {
            return self.bad_event();
        }
        let wire = if self
            .rng
            .random_bool(self.config.supplementary_rate.clamp(0.0, 1.0))
        {
            self.supplementary().unwrap_or_else(|| self.evaluation())
        } else {
            self.evaluation()
        };
        let payload = serde_json::to_vec(&wire).unwrap_or_default();
        let slot = Some((wire.project_no.clone(), wire.assess_number));
        if self.recent.len() == self.recent.capacity() {
            self.recent.pop_front();
        }
        self.recent.push_back((wire.clone(), payload.clone()));
        GeneratedEvent {
            key: wire.project_no,
            payload,
            expected: Expected::Accepted,
            slot,
        }
    }

    /// A finished case nobody evaluates: its lifecycle records (`proStatus` 1, 2, 3) on the day,
    /// as `(key, payload)`. The engine gives it its region's default evaluation once the policy's
    /// period has passed.
    pub fn next_unevaluated_case(&mut self) -> Vec<(String, Vec<u8>)> {
        let wire = self.evaluation();
        lifecycle_of(&wire)
    }

    fn pick_recent(&mut self) -> Option<(WireOut, Vec<u8>)> {
        if self.recent.is_empty() {
            return None;
        }
        let index = self.rng.random_range(0..self.recent.len());
        self.recent.get(index).cloned()
    }

    fn weighted<T: Copy>(&mut self, mix: &[(T, u32)]) -> T {
        let total: u32 = mix.iter().map(|(_, w)| w).sum();
        let mut pick = self.rng.random_range(0..total);
        for (value, weight) in mix {
            if pick < *weight {
                return *value;
            }
            pick -= weight;
        }
        mix[0].0
    }

    /// A new case's first evaluation.
    fn evaluation(&mut self) -> WireOut {
        self.sequence += 1;
        let department = self.rng.random_range(0..self.province.departments.len());
        let pf = self.weighted(CHANNEL_MIX);
        let satisfaction = self.weighted(SATISFACTION_MIX);
        let user_prop = self.weighted(&[(1u8, 86), (2, 9), (3, 2), (4, 1), (5, 1), (6, 1)]);
        let (tags, text) = self.opinion(satisfaction);
        let window = pf == 4;
        let assess_time = self.time_of_day(window);
        let anonymous = self.rng.random_bool(0.08);
        let name = person_name(&mut self.rng);
        let dept = &self.province.departments[department];
        let county = &dept.area.as_str()[..6];
        let cert = format!(
            "{county}19{:02}{:02}{:02}{:04}",
            self.rng.random_range(50..99),
            self.rng.random_range(1..13),
            self.rng.random_range(1..29),
            self.rng.random_range(0..10_000)
        );
        let phone = format!(
            "1{}{:09}",
            self.rng.random_range(3..10),
            self.rng.random_range(0..1_000_000_000u32)
        );
        let (task_code, task_name) = dept
            .items
            .choose(&mut self.rng)
            .cloned()
            .unwrap_or_default();
        // The hall's region: the department's own county, or a township/village below it.
        let areas = &self.province.areas;
        let below = self
            .areas_below
            .entry(county.to_owned())
            .or_insert_with(|| {
                areas
                    .iter()
                    .filter(|a| a.as_str().starts_with(county))
                    .copied()
                    .collect()
            });
        let area = if self.rng.random_bool(0.6) {
            below.choose(&mut self.rng).copied()
        } else {
            None
        }
        .unwrap_or(dept.area);
        let staff = if window {
            dept.staff.choose(&mut self.rng).cloned()
        } else {
            None
        };
        let project_no = format!(
            "{county}{}{:09}",
            self.config.day.format("%Y%m%d"),
            self.sequence
        );
        let (user_name, user_cert, user_phone) = match (anonymous, pf) {
            (true, _) => (None, None, None),
            (false, 6 | 7) => (None, None, Some(phone)),
            (false, _) => (Some(name), Some(cert), Some(phone)),
        };
        WireOut {
            project_no,
            task_code,
            task_name: task_name.to_owned(),
            dept_code: dept.code.clone(),
            dept_name: dept.name.clone(),
            area_code: area.as_str().to_owned(),
            pf: pf.to_string(),
            satisfaction: satisfaction.to_string(),
            eval_detail: tags,
            writing_evaluation: text,
            assess_time,
            assess_number: 1,
            user_prop: user_prop.to_string(),
            user_name,
            user_cert,
            user_phone,
            anonymity_flag: if anonymous { "1" } else { "2" }.into(),
            staff_id: staff.as_ref().map(|s| s.0.clone()),
            staff_name: staff.map(|s| s.1),
        }
    }

    /// Tags of the level and free text; a bad review always says why.
    fn opinion(&mut self, satisfaction: u8) -> (String, String) {
        let level_tags: Vec<u16> = crate::tags::TAGS
            .iter()
            .map(|(c, _)| *c)
            .filter(|c| c / 100 == u16::from(satisfaction))
            .collect();
        let count = if satisfaction <= 2 {
            self.rng.random_range(1..3)
        } else {
            self.rng.random_range(0..3)
        };
        let mut tags: Vec<u16> = level_tags
            .choose_multiple(&mut self.rng, count)
            .copied()
            .collect();
        tags.sort_unstable();
        let text = TEXTS[usize::from(satisfaction - 1)]
            .choose(&mut self.rng)
            .copied()
            .unwrap_or("");
        (
            tags.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
            text.to_owned(),
        )
    }

    fn time_of_day(&mut self, office_hours: bool) -> String {
        let seconds = if office_hours {
            let morning = self.rng.random_bool(0.55);
            if morning {
                self.rng.random_range(8 * 3600 + 1800..12 * 3600)
            } else {
                self.rng.random_range(14 * 3600..17 * 3600 + 1800)
            }
        } else {
            self.rng.random_range(0..86_400)
        };
        let time = self
            .config
            .day
            .and_hms_opt(0, 0, 0)
            .map(|d| d + chrono::Duration::seconds(seconds));
        time.map(|t: NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    }

    /// A supplementary evaluation of a recently evaluated case that has none yet.
    fn supplementary(&mut self) -> Option<WireOut> {
        let index = (0..8)
            .map(|_| self.rng.random_range(0..self.recent.len().max(1)))
            .find(|i| {
                self.recent.get(*i).is_some_and(|(w, _)| {
                    w.assess_number == 1 && !self.supplemented.contains(&w.project_no)
                })
            })?;
        let mut wire = self.recent.get(index)?.0.clone();
        wire.assess_number = 2;
        wire.pf = "2".into();
        wire.staff_id = None;
        wire.staff_name = None;
        let satisfaction = self.weighted(SATISFACTION_MIX);
        wire.satisfaction = satisfaction.to_string();
        (wire.eval_detail, wire.writing_evaluation) = self.opinion(satisfaction);
        wire.assess_time = self.time_of_day(false);
        self.supplemented.insert(wire.project_no.clone());
        Some(wire)
    }

    /// A malformed or invalid event, with the one reason it must be rejected for.
    fn bad_event(&mut self) -> GeneratedEvent {
        let mut wire = self.evaluation();
        let kind = self.rng.random_range(0..10);
        let reason = match kind {
            0 => {
                // Cut at a character boundary, so that the record is valid UTF-8 but not JSON.
                let text = serde_json::to_string(&wire).unwrap_or_default();
                let cut = (0..=text.len() / 2)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                let payload = text.as_bytes()[..cut].to_vec();
                return GeneratedEvent {
                    key: wire.project_no,
                    payload,
                    expected: Expected::DeadLetter(Reason::NotJson),
                    slot: None,
                };
            }
            1 => {
                let mut payload = serde_json::to_vec(&wire).unwrap_or_default();
                let at = payload.len() / 2;
                payload.splice(at..at, [0xff, 0xfe]);
                return GeneratedEvent {
                    key: wire.project_no,
                    payload,
                    expected: Expected::DeadLetter(Reason::NotUtf8),
                    slot: None,
                };
            }
            2 => {
                wire.area_code = format!("{}00{}", &wire.area_code[..2], &wire.area_code[4..]);
                if wire.area_code.ends_with("00000000") {
                    wire.area_code = "41000010020".into();
                }
                Reason::InvalidAreaCode
            }
            3 => {
                let last = wire.dept_code.pop().unwrap_or('0');
                wire.dept_code.push(if last == '0' { '1' } else { '0' });
                Reason::InvalidDeptCode
            }
            4 => {
                wire.satisfaction = "6".into();
                Reason::InvalidCode
            }
            5 => {
                wire.project_no = String::new();
                Reason::MissingField
            }
            6 => {
                wire.assess_time = "2099-01-01 09:00:00".into();
                Reason::FutureAssessTime
            }
            7 => {
                wire.satisfaction = "5".into();
                wire.eval_detail = "510,115".into();
                Reason::TagLevelMismatch
            }
            8 => {
                wire.satisfaction = "1".into();
                wire.eval_detail = String::new();
                wire.writing_evaluation = String::new();
                Reason::BadReviewWithoutReason
            }
            _ => match self
                .recent
                .iter()
                .rev()
                .find(|(w, _)| w.assess_number == 1)
                .cloned()
            {
                Some((mut earlier, _)) => {
                    // The same case evaluated again, differently.
                    earlier.satisfaction = if earlier.satisfaction == "3" {
                        "4".into()
                    } else {
                        "3".into()
                    };
                    (earlier.eval_detail, earlier.writing_evaluation) =
                        (String::new(), "再次评价".into());
                    wire = earlier;
                    Reason::CaseAlreadyEvaluated
                }
                None => {
                    wire.pf = "9".into();
                    Reason::InvalidCode
                }
            },
        };
        let payload = serde_json::to_vec(&wire).unwrap_or_default();
        GeneratedEvent {
            key: wire.project_no,
            payload,
            expected: Expected::DeadLetter(reason),
            slot: None,
        }
    }
}

impl Iterator for Generator {
    type Item = GeneratedEvent;
    fn next(&mut self) -> Option<GeneratedEvent> {
        Some(self.next_event())
    }
}

/// What was produced, by the outcome the engine must reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProduceReport {
    pub produced: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub dead_letters: BTreeMap<Reason, u64>,
    pub bytes: u64,
}

impl ProduceReport {
    pub fn record(&mut self, event: &GeneratedEvent) {
        self.produced += 1;
        self.bytes += event.payload.len() as u64;
        match event.expected {
            Expected::Accepted => self.accepted += 1,
            Expected::Duplicate => self.duplicates += 1,
            Expected::DeadLetter(reason) => *self.dead_letters.entry(reason).or_default() += 1,
        }
    }

    pub fn dead_lettered(&self) -> u64 {
        self.dead_letters.values().sum()
    }

    /// Adds what another run produced (a producer that works in slices).
    pub fn absorb(&mut self, other: ProduceReport) {
        self.produced += other.produced;
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        self.bytes += other.bytes;
        for (reason, count) in other.dead_letters {
            *self.dead_letters.entry(reason).or_default() += count;
        }
    }
}

/// Creates topics that do not exist yet (an existing topic is left as it is), with the operator's
/// `kafka.properties` (TLS, SASL) like every other client.
pub async fn ensure_topics(
    kafka: &KafkaConfig,
    topics: &[(&str, i32)],
) -> Result<(), GenerateError> {
    let admin: AdminClient<DefaultClientContext> =
        crate::source::kafka::client_config(kafka).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&new, &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code).into()),
        }
    }
    Ok(())
}

/// A producer for generated events: the engine's idempotent producer with larger batches and
/// queue, and the operator's `kafka.properties` last.
pub fn producer(kafka: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    crate::source::kafka::producer_with(
        kafka,
        &[
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.messages", "1000000"),
            ("queue.buffering.max.kbytes", "1048576"),
            ("message.timeout.ms", "300000"),
        ],
    )
}

/// Produces `events` events at up to `rate` events/s (`None`: as fast as the broker takes them),
/// calling `progress` with the count so far.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    generator: &mut Generator,
    events: u64,
    rate: Option<u32>,
    mut progress: impl FnMut(&GeneratedEvent),
) -> Result<ProduceReport, GenerateError> {
    let limiter = match rate {
        Some(rate) => {
            let rate = NonZeroU32::new(rate).ok_or(GenerateError::Rate)?;
            Some(RateLimiter::direct(Quota::per_second(rate)))
        }
        None => None,
    };
    let mut report = ProduceReport::default();
    let mut in_flight: VecDeque<DeliveryFuture> = VecDeque::new();
    for _ in 0..events {
        if let Some(limiter) = &limiter {
            limiter.until_ready().await;
        }
        let event = generator.next_event();
        loop {
            let record = FutureRecord::to(topic)
                .key(event.key.as_bytes())
                .payload(&event.payload);
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    await_oldest(&mut in_flight).await?;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        while in_flight.len() > 200_000 {
            await_oldest(&mut in_flight).await?;
        }
        report.record(&event);
        progress(&event);
    }
    while !in_flight.is_empty() {
        await_oldest(&mut in_flight).await?;
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(report)
}

/// Produces `(key, payload)` records (case lifecycles, workflow events) to `topic`, in order, and
/// waits until the broker has them all.
pub async fn produce_records(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, Vec<u8>)],
) -> Result<(), GenerateError> {
    let mut in_flight: VecDeque<DeliveryFuture> = VecDeque::new();
    for (key, payload) in records {
        loop {
            let record = FutureRecord::to(topic).key(key.as_bytes()).payload(payload);
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    await_oldest(&mut in_flight).await?;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    while !in_flight.is_empty() {
        await_oldest(&mut in_flight).await?;
    }
    Ok(())
}

async fn await_oldest(in_flight: &mut VecDeque<DeliveryFuture>) -> Result<(), GenerateError> {
    match in_flight.pop_front() {
        Some(delivery) => match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e.into()),
            Err(_) => Err(KafkaError::Canceled.into()),
        },
        None => {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;
    use crate::transform::validate::{validate, ValidationRules};

    fn generator(dup: f64, bad: f64) -> Generator {
        let mut config = GeneratorConfig::new("41", NaiveDate::from_ymd_opt(2026, 11, 22).unwrap());
        config.dup_rate = dup;
        config.bad_rate = bad;
        Generator::new(config).unwrap()
    }

    #[test]
    fn valid_events_pass_the_validator_and_bad_ones_fail_for_their_reason() {
        let now = chrono::Utc::now().timestamp_micros();
        let rules = ValidationRules::default();
        let mut slots = std::collections::HashSet::new();
        for event in generator(0.05, 0.1).take(5_000) {
            let result = decode(&event.payload, 1 << 16).and_then(|w| validate(w, &rules, now));
            match event.expected {
                Expected::Accepted => {
                    let e = result.unwrap_or_else(|r| {
                        panic!("{r:?}: {}", String::from_utf8_lossy(&event.payload))
                    });
                    assert!(
                        slots.insert((e.project_no.to_string(), e.assess_number.code())),
                        "slot repeated"
                    );
                    assert!(e.area.as_str().starts_with("41"));
                }
                Expected::Duplicate => assert!(result.is_ok()),
                Expected::DeadLetter(Reason::CaseAlreadyEvaluated) => assert!(result.is_ok()),
                Expected::DeadLetter(reason) => {
                    assert_eq!(result.err().map(|r| r.reason), Some(reason))
                }
            }
        }
    }

    #[test]
    fn distribution_is_realistic() {
        let mut bad = 0;
        let mut channels = std::collections::HashMap::new();
        let n = 20_000;
        for event in generator(0.0, 0.0).take(n) {
            let value: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
            let level: u8 = value["satisfaction"].as_str().unwrap().parse().unwrap();
            bad += usize::from(level <= 2);
            *channels
                .entry(value["pf"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
        let share = bad as f64 / n as f64;
        assert!((0.005..=0.02).contains(&share), "bad-review share {share}");
        assert_eq!(channels.len(), 7, "every channel appears: {channels:?}");
        assert!(
            channels["4"] > channels["6"],
            "windows outnumber the hotline"
        );
    }

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<_> = generator(0.1, 0.1).take(200).map(|e| e.payload).collect();
        let b: Vec<_> = generator(0.1, 0.1).take(200).map(|e| e.payload).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn organisation_codes_follow_gb_11714() {
        // 12345678 → weighted sum 3+14+27+40+25+48+28+16 = 201, 11 - 201 % 11 = 8.
        assert_eq!(organisation_check_char("12345678"), '8');
    }
}
