//! The "why" of a hotspot: its most frequent bad-review tags with their meanings, and the most
//! frequent complaint terms of its texts (Chinese word segmentation with `jieba-rs`, stop words
//! removed).

use std::collections::HashMap;
use std::sync::OnceLock;

use jieba_rs::Jieba;

/// Words that say nothing about the complaint: function words, pronouns, degree and time words
/// common in review texts. Single characters are dropped anyway (see [`is_term`]).
const STOP_WORDS: &[&str] = &[
    "一个",
    "一些",
    "一直",
    "一下",
    "一次",
    "两次",
    "三次",
    "三趟",
    "几次",
    "多次",
    "已经",
    "还是",
    "就是",
    "可以",
    "因为",
    "所以",
    "但是",
    "然后",
    "现在",
    "这个",
    "那个",
    "这样",
    "那样",
    "时候",
    "非常",
    "觉得",
    "而且",
    "如果",
    "虽然",
    "我们",
    "他们",
    "你们",
    "自己",
    "什么",
    "怎么",
    "为什么",
    "没有",
    "不是",
    "还有",
    "还没",
    "只能",
    "只是",
    "一样",
    "比较",
    "真的",
    "特别",
    "实在",
    "希望",
    "感觉",
    "今天",
    "昨天",
    "明天",
    "之后",
    "之前",
    "以后",
    "以前",
    "出来",
    "起来",
    "过来",
    "知道",
    "告诉",
    "问题",
    "情况",
    "其他",
    "别人",
    "这么",
    "那么",
    "的话",
    "就要",
    "不要",
    "不能",
    "不会",
    "需要",
    "让我",
    "给我",
    "我的",
    "他的",
    "说是",
    "的是",
    "后来",
    "再次",
    "一点",
    "有点",
    "太多",
    "很多",
];

fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(Jieba::new)
}

/// A token worth counting: at least two characters, some of them letters (Han or Latin), and not a
/// stop word.
pub fn is_term(token: &str) -> bool {
    token.chars().count() >= 2
        && token.chars().any(char::is_alphabetic)
        && !token.chars().any(|c| c.is_ascii_digit())
        && !STOP_WORDS.contains(&token)
}

/// The `limit` most frequent terms of the texts, with how many texts use each (a term repeated in
/// one text counts once), most frequent first, ties by the term.
pub fn top_terms<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    limit: usize,
) -> Vec<(String, usize)> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let jieba = jieba();
    for text in texts {
        let mut seen: Vec<&str> = jieba
            .cut(text, true)
            .into_iter()
            .map(|token| token.word.trim())
            .filter(|t| is_term(t))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        for term in seen {
            *counts.entry(term).or_insert(0) += 1;
        }
    }
    ranked(counts.into_iter().map(|(t, n)| (t.to_owned(), n)), limit)
}

/// The `limit` most frequent tags, most frequent first, ties by the code.
pub fn top_tags<'a>(tags: impl IntoIterator<Item = &'a str>, limit: usize) -> Vec<(String, usize)> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for tag in tags {
        *counts.entry(tag).or_insert(0) += 1;
    }
    ranked(counts.into_iter().map(|(t, n)| (t.to_owned(), n)), limit)
}

fn ranked(counts: impl Iterator<Item = (String, usize)>, limit: usize) -> Vec<(String, usize)> {
    let mut counts: Vec<_> = counts.collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(limit);
    counts
}

/// The meaning of a tag code (`207` → 无理由超过法定办理时间), from the shipped tag table.
pub fn tag_meaning(tag: &str) -> Option<&'static str> {
    crate::tags::meaning(tag.parse().ok()?)
}

/// `207 无理由超过法定办理时间 ×3` (the meaning omitted when the code is unknown).
pub fn describe_tag(tag: &str, count: usize) -> String {
    match tag_meaning(tag) {
        Some(meaning) => format!("{tag} {meaning} ×{count}"),
        None => format!("{tag} ×{count}"),
    }
}

/// `推诿 ×3`
pub fn describe_term(term: &str, count: usize) -> String {
    format!("{term} ×{count}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_counted_once_per_text_without_stop_words() {
        let texts = [
            "窗口推诿扯皮，材料反复提交，材料还是不对",
            "工作人员推诿，让我补交材料",
            "已经三次了，我们觉得非常不满意",
            "",
            "123 ！！！",
        ];
        let top = top_terms(texts, 3);
        // Ties are ordered by the term's UTF-8 bytes: 推 (U+63A8) before 材 (U+6750).
        assert_eq!(top[0], ("推诿".to_owned(), 2), "{top:?}");
        assert_eq!(top[1], ("材料".to_owned(), 2), "{top:?}");
        for (term, _) in top_terms(texts, 100) {
            assert!(is_term(&term), "{term}");
            assert!(!STOP_WORDS.contains(&term.as_str()), "{term}");
        }
    }

    #[test]
    fn tokens_are_filtered() {
        for (token, keep) in [
            ("推诿", true),
            ("材料", true),
            ("的", false),
            ("已经", false),
            ("，，", false),
            ("2026", false),
            ("12345热线", false),
            ("APP", true),
        ] {
            assert_eq!(is_term(token), keep, "{token}");
        }
    }

    #[test]
    fn tags_are_ranked_and_described() {
        let top = top_tags(["110", "207", "110", "108", "207", "110"], 2);
        assert_eq!(top, vec![("110".to_owned(), 3), ("207".to_owned(), 2)]);
        assert_eq!(describe_tag("207", 2), "207 无理由超过法定办理时间 ×2");
        assert_eq!(describe_tag("999", 1), "999 ×1");
        assert_eq!(tag_meaning("x"), None);
        assert_eq!(describe_term("推诿", 3), "推诿 ×3");
        assert!(top_terms(Vec::<&str>::new(), 5).is_empty());
    }
}
