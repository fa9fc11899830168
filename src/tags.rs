//! Evaluation tags (评价标签, `evalDetail`): three-digit codes whose first digit is the satisfaction
//! level they belong to (DOMAIN.md §6), and what each one means. Alerts and the "why" of hotspots
//! show the meaning beside the code.

/// Every tag code with its meaning; the first digit is the level it belongs to.
pub const TAGS: &[(u16, &str)] = &[
    (510, "办事指南清晰准确"),
    (511, "服务热情周到"),
    (512, "办理快捷高效"),
    (513, "一次办好"),
    (514, "申请材料精简"),
    (515, "办事流程便捷"),
    (516, "大厅环境舒适"),
    (517, "网上办理方便"),
    (406, "办事指南较清晰"),
    (407, "服务态度较好"),
    (408, "办理较快"),
    (409, "材料较精简"),
    (410, "流程较便捷"),
    (411, "跑动次数少"),
    (412, "等候时间短"),
    (413, "系统操作方便"),
    (307, "办事指南基本清楚"),
    (308, "服务态度一般"),
    (309, "办理速度一般"),
    (310, "材料偏多"),
    (311, "需多次跑动"),
    (312, "等候时间较长"),
    (313, "系统偶有卡顿"),
    (314, "咨询答复一般"),
    (207, "无理由超过法定办理时间"),
    (208, "办事指南之外增加审批条件"),
    (209, "服务态度生硬"),
    (210, "要求重复提交材料"),
    (211, "多次跑动仍未办成"),
    (212, "咨询无人答复"),
    (213, "系统故障无法办理"),
    (214, "窗口人员不在岗"),
    (108, "推诿扯皮"),
    (109, "吃拿卡要"),
    (110, "无理由超过法定办理时间"),
    (111, "办事指南之外增加审批条件"),
    (112, "多次跑动仍未办成"),
    (113, "态度恶劣"),
    (114, "违规收费"),
    (115, "服务态度差、效率低"),
];

/// The meaning of a tag code, if it is one the national interface defines.
pub fn meaning(code: u16) -> Option<&'static str> {
    TAGS.iter().find(|(c, _)| *c == code).map(|(_, m)| *m)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_tag_is_listed_once_under_its_level() {
        let mut seen = std::collections::HashSet::new();
        for (code, meaning) in super::TAGS {
            assert!((100..600).contains(code), "{code}");
            assert!(!meaning.is_empty());
            assert!(seen.insert(*code), "{code} twice");
        }
        assert_eq!(super::meaning(207), Some("无理由超过法定办理时间"));
        assert_eq!(super::meaning(999), None);
    }
}
