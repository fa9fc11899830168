use super::*;

fn shipped() -> Policies {
    Policies::shipped().unwrap()
}

fn code(text: &str) -> RegionCode {
    RegionCode::parse(&format!("{text:0<12}")).unwrap()
}

fn span(text: &str) -> Span {
    text.parse().unwrap()
}

/// Every value a preset's document states, as (key, value): the values are read off the document
/// (quoted in the preset file beside each), not off the file, and each must come from the preset
/// itself rather than be inherited.
fn check_preset(region: &str, file: &str, stated: &[(&str, &str)]) {
    let policies = shipped();
    let resolved = policies.for_region(&code(region));
    let flat: BTreeMap<String, String> = flatten(&toml::Table::try_from(&resolved.policy).unwrap())
        .into_iter()
        .collect();
    for (key, value) in stated {
        assert_eq!(
            flat.get(*key).map(String::as_str),
            Some(*value),
            "{region} {key}"
        );
        assert_eq!(
            resolved.origin.get(*key).map(String::as_str),
            Some(file),
            "{region} {key} must be stated by its own document"
        );
    }
    // Everything else is the default's.
    for (key, from) in &resolved.origin {
        if !stated.iter().any(|(k, _)| k == key) {
            assert_eq!(from, "deploy/policies/default.toml", "{region} {key}");
        }
    }
}

#[test]
fn luoning_000() {
    check_preset(
        "410328",
        "deploy/policies/410328-luoning.toml",
        &[
            // 三(二) 在1个工作日内与当事人完成有效沟通
            ("deadlines.first_contact", "\"1 working day\""),
            // 三(三) 要在3个工作日内完成部门差评申诉审核
            ("deadlines.appeal_audit", "\"3 working days\""),
            // 三(一) 差评10日内未完成整改的…分管领导; 若15日内未完成整改…主要领导
            ("deadlines.escalate_deputy_leader", "\"10 natural days\""),
            ("deadlines.escalate_main_leader", "\"15 natural days\""),
            // 三(三) 部门整改后若评价者…5个自然日内未评价的
            ("revisit.no_reevaluation", "\"5 natural days\""),
        ],
    );
}

#[test]
fn jilin_001() {
    check_preset(
        "220200",
        "deploy/policies/220200-jilin.toml",
        &[
            // 第十条 服务对象接受服务后 7 日内未进行评价的，默认为"基本满意"
            ("default_evaluation.level", "\"basically_satisfied\""),
            ("default_evaluation.after", "\"7 natural days\""),
            ("default_evaluation.from", "\"service_finished\""),
            // 第十九条 10 个工作日内回复; 15 个工作日内完成整改; 最长不超过 6 个月; 实名差评回访率达100
            ("deadlines.reply", "\"10 working days\""),
            ("deadlines.rectify_simple", "\"15 working days\""),
            ("deadlines.rectify_complex", "\"6 months\""),
            ("revisit.real_name_share", "1.0"),
        ],
    );
}

#[test]
fn fujian_002() {
    check_preset(
        "350000",
        "deploy/policies/350000-fujian.toml",
        &[
            // 第五条 服务对象接受服务后7个自然日内未进行评价的，默认为"满意"
            ("default_evaluation.level", "\"satisfied\""),
            ("default_evaluation.after", "\"7 natural days\""),
            ("default_evaluation.from", "\"service_finished\""),
            // 第十六条 应当在10个工作日内进行整改
            ("deadlines.rectify_simple", "\"10 working days\""),
            // 第十三条 可在7个工作日内…提出申诉
            ("deadlines.appeal", "\"7 working days\""),
        ],
    );
}

#[test]
fn xuchang_003() {
    check_preset(
        "411000",
        "deploy/policies/411000-xuchang.toml",
        &[
            // 制度 第九条 若办件生成 7 个自然日内未获评价，评价结果默认为"基本满意"
            ("default_evaluation.level", "\"basically_satisfied\""),
            ("default_evaluation.after", "\"7 natural days\""),
            ("default_evaluation.from", "\"case_generated\""),
            // 制度 第十条 应在 15 个自然日内进行整改
            ("deadlines.rectify_simple", "\"15 natural days\""),
        ],
    );
}

#[test]
fn xishuangbanna_004() {
    check_preset(
        "532800",
        "deploy/policies/532800-xishuangbanna.toml",
        &[
            // 一(二)1 于2个工作日内把差评结果转给被评价部门
            ("deadlines.forward", "\"2 working days\""),
            // 一(二)2 2个工作日; 15个工作日内完成整改; 延期不得超过2个工作日
            ("deadlines.rectify_simple", "\"2 working days\""),
            ("deadlines.rectify_complex", "\"15 working days\""),
            ("deadlines.extension", "\"2 working days\""),
            // 一(二)3 整改完成后2个工作日内
            ("deadlines.report_back", "\"2 working days\""),
            // 二(二) 5个工作日内…申请复核; 5个工作日内…复核
            ("deadlines.review_apply", "\"5 working days\""),
            ("deadlines.review_decide", "\"5 working days\""),
            // 一(二)4 随机抽取不低于20%
            ("revisit.random_share", "0.2"),
        ],
    );
}

#[test]
fn a_region_takes_its_nearest_file_and_inherits_the_rest() {
    let policies = shipped();
    let at = |text: &str| policies.for_region(&code(text)).policy.clone();
    // A village in Xuchang (411002 魏都区 …) takes Xuchang's city file.
    let xuchang = at("411002001001");
    assert_eq!(xuchang.default_evaluation.from, PeriodStart::CaseGenerated);
    // Fujian's counties take the province's default level; Jilin city's its own.
    assert_eq!(
        at("350104").default_evaluation.level,
        DefaultLevel::Satisfied
    );
    assert_eq!(
        at("220204").default_evaluation.level,
        DefaultLevel::BasicallySatisfied
    );
    // A region with no file anywhere in its chain gets the default.
    assert_eq!(at("110101"), policies.default_policy().policy);
    // Luoning's own keys, the default's for the rest.
    let luoning = at("410328");
    assert_eq!(
        luoning.deadlines.escalate_main_leader,
        span("15 natural days")
    );
    assert_eq!(luoning.deadlines.forward, span("2 working days"));
    assert_eq!(at("410328").default_evaluation.level.satisfaction(), 3);
    assert_eq!(at("350000").default_evaluation.level.satisfaction(), 4);
}

const DEFAULT: &str = include_str!("../../deploy/policies/default.toml");

fn parse(files: &[(&str, &str)]) -> Result<Policies, PolicyError> {
    let regions = RegionTable::edition_2023().unwrap();
    let mut all = vec![("default.toml", DEFAULT)];
    all.extend_from_slice(files);
    Policies::parse(&all, &regions)
}

#[test]
fn a_county_file_overrides_only_what_it_names_over_its_city_and_province() {
    let policies = parse(&[
        (
            "henan.toml",
            "region = \"410000\"\n[deadlines]\nreply = \"8 working days\"\nforward = \"3 working days\"",
        ),
        ("luoyang.toml", "region = \"410300\"\n[deadlines]\nreply = \"9 working days\""),
        ("luoning.toml", "region = \"410328\"\n[deadlines]\nforward = \"1 working day\""),
    ])
    .unwrap();
    let luoning = policies.for_region(&code("410328100201"));
    assert_eq!(luoning.policy.deadlines.forward, span("1 working day"));
    assert_eq!(luoning.origin["deadlines.forward"], "luoning.toml");
    assert_eq!(luoning.policy.deadlines.reply, span("9 working days"));
    assert_eq!(luoning.origin["deadlines.reply"], "luoyang.toml");
    assert_eq!(luoning.origin["deadlines.appeal"], "default.toml");
    assert_eq!(
        luoning.files,
        ["default.toml", "henan.toml", "luoyang.toml", "luoning.toml"]
    );
    // Another county of Luoyang: the city's and the province's values.
    let yichuan = policies.for_region(&code("410329"));
    assert_eq!(yichuan.policy.deadlines.forward, span("3 working days"));
    assert_eq!(yichuan.policy.deadlines.reply, span("9 working days"));
    // `policy show` names the file of every value.
    let shown = luoning.explain();
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("deadlines.forward = \"1 working day\"")
                && l.ends_with("# luoning.toml")),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 4 + 13 + 3);
}

#[test]
fn a_bad_policy_file_is_one_line_naming_the_file_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "region = \"350000\"\n[deadlines]\nforwrd = \"2 working days\"",
            "fj.toml: deadlines.forwrd: unknown field `forwrd`",
        ),
        (
            "region = \"350000\"\n[deadlines]\nforward = \"-2 working days\"",
            "fj.toml: deadlines.forward: expected a period",
        ),
        (
            "region = \"350000\"\n[deadlines]\nforward = 2",
            "fj.toml: deadlines.forward: invalid type",
        ),
        (
            "region = \"350000\"\n[revisit]\nrandom_share = 1.5",
            "fj.toml: revisit.random_share: expected a share from 0 to 1",
        ),
        (
            "region = \"350000\"\n[default_evaluation]\nlevel = \"dissatisfied\"",
            "fj.toml: default_evaluation.level: unknown variant",
        ),
        (
            "region = \"350000\"\ncolour = \"red\"",
            "fj.toml: colour: unknown field `colour`",
        ),
        (
            "region = \"999999\"",
            "fj.toml: region: \"999999\" is not a",
        ),
        (
            "region = \"3500\"",
            "fj.toml: region: \"3500\" is not 6 digits",
        ),
        (
            "region = \"350104001\"",
            "fj.toml: region: \"350104001\" is not 6 digits",
        ),
        (
            "[deadlines]\nforward = \"2 working days\"",
            "fj.toml: region: missing",
        ),
        ("region = 350000", "fj.toml: region: expected a string"),
        ("region = \"350000\"\n[deadlines\n", "fj.toml: -: "),
    ];
    for (text, expected) in cases {
        let error = parse(&[("fj.toml", text)]).unwrap_err().to_string();
        assert!(error.starts_with(expected), "{text:?} → {error}");
        assert!(!error.contains('\n'), "one line: {error:?}");
    }
    // Two files for one region; a default that misses a key.
    let twice = parse(&[
        ("a.toml", "region = \"350000\""),
        ("b.toml", "region = \"350000\""),
    ]);
    assert!(twice
        .unwrap_err()
        .to_string()
        .starts_with("b.toml: region: 350000 already has a policy in a.toml"));
    let regions = RegionTable::edition_2023().unwrap();
    let short_default = DEFAULT.replace("forward = ", "# forward = ");
    let missing = Policies::parse(&[("default.toml", &short_default)], &regions).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "default.toml: deadlines: missing field `forward`"
    );
    let no_default = Policies::parse(&[("fj.toml", "region = \"350000\"")], &regions).unwrap_err();
    assert!(no_default
        .to_string()
        .starts_with("default.toml: -: missing"));
}
