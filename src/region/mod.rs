//! Administrative division codes (统计用区划代码): the 12-digit `areaCode` of the wire format.
//!
//! A code is 2 province + 2 city + 2 county + 3 township + 3 village digits, and a parent's code is the
//! child's prefix padded with zeros, so a valid code has zeros only at its tail: once a level is all
//! zeros, every level below it is too. The code table itself changes every year (counties merge,
//! townships are renamed), so it is versioned data ([`RegionTable::edition_2023`]), never a constant.

use std::collections::HashMap;
use std::fmt;

/// Digit ranges of the five levels inside a 12-digit code.
const LEVELS: [(usize, usize); 5] = [(0, 2), (2, 4), (4, 6), (6, 9), (9, 12)];

/// The level of a division, from the province down to the village (村/社区).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegionLevel {
    Province,
    City,
    County,
    Township,
    Village,
}

/// Why an `areaCode` is not a valid division code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionCodeError {
    #[error("must be 12 digits, got {0} characters")]
    Length(usize),
    #[error("must contain only the digits 0-9")]
    NotDigits,
    #[error("province digits are 00")]
    NoProvince,
    #[error("non-zero {0:?} digits below an all-zero level (zeros are allowed only at the tail)")]
    BrokenHierarchy(RegionLevel),
}

/// A structurally valid 12-digit division code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegionCode([u8; 12]);

impl RegionCode {
    /// Parses and checks the hierarchy (zeros only at the tail).
    pub fn parse(code: &str) -> Result<Self, RegionCodeError> {
        let bytes = code.as_bytes();
        if bytes.len() != 12 {
            return Err(RegionCodeError::Length(code.chars().count()));
        }
        if !bytes.iter().all(u8::is_ascii_digit) {
            return Err(RegionCodeError::NotDigits);
        }
        let mut digits = [0u8; 12];
        digits.copy_from_slice(bytes);
        let is_zero = |(from, to): (usize, usize)| digits[from..to].iter().all(|d| *d == b'0');
        if is_zero(LEVELS[0]) {
            return Err(RegionCodeError::NoProvince);
        }
        // Under a city without counties (不设区的地级市: 东莞, 中山, 儋州) townships sit directly
        // below the city, so there the county digits are 00 while the township's are not.
        let countyless = !is_zero(LEVELS[1])
            && is_zero(LEVELS[2])
            && countyless_cities().contains(&[digits[0], digits[1], digits[2], digits[3]]);
        let mut seen_zero = false;
        for (index, level) in LEVELS.iter().enumerate() {
            let zero = is_zero(*level);
            if seen_zero && !zero {
                return Err(RegionCodeError::BrokenHierarchy(Self::level_at(index)));
            }
            seen_zero |= zero && !(index == 2 && countyless);
        }
        Ok(Self(digits))
    }

    fn level_at(index: usize) -> RegionLevel {
        match index {
            0 => RegionLevel::Province,
            1 => RegionLevel::City,
            2 => RegionLevel::County,
            3 => RegionLevel::Township,
            _ => RegionLevel::Village,
        }
    }

    fn segment_is_zero(&self, index: usize) -> bool {
        let (from, to) = LEVELS[index];
        self.0[from..to].iter().all(|d| *d == b'0')
    }

    /// The twelve digits.
    pub fn as_str(&self) -> &str {
        digits_text(&self.0)
    }

    /// The most specific level this code names.
    pub fn level(&self) -> RegionLevel {
        (1..5)
            .rev()
            .find(|i| !self.segment_is_zero(*i))
            .map_or(RegionLevel::Province, Self::level_at)
    }

    /// Prefix of `len` digits, if the level ending there is present.
    fn prefix(&self, level: usize) -> Option<&str> {
        if self.segment_is_zero(level) {
            return None;
        }
        Some(&self.as_str()[..LEVELS[level].1])
    }

    /// 6-digit province code (`410000`).
    pub fn province(&self) -> String {
        self.province_digits().as_str().to_owned()
    }

    /// 6-digit city code (`410300`), if the code is at city level or below.
    pub fn city(&self) -> Option<String> {
        self.city_digits().map(|d| d.as_str().to_owned())
    }

    /// 6-digit county code (`410328`), if at county level or below.
    pub fn county(&self) -> Option<String> {
        self.county_str().map(str::to_owned)
    }

    /// 9-digit township code (`410328100`), if at township level or below.
    pub fn township(&self) -> Option<String> {
        self.township_str().map(str::to_owned)
    }

    /// The province code without allocating.
    pub fn province_digits(&self) -> SixDigits {
        SixDigits([self.0[0], self.0[1], b'0', b'0', b'0', b'0'])
    }

    /// The city code without allocating.
    pub fn city_digits(&self) -> Option<SixDigits> {
        (!self.segment_is_zero(1))
            .then(|| SixDigits([self.0[0], self.0[1], self.0[2], self.0[3], b'0', b'0']))
    }

    /// The county code, a prefix of the code itself.
    pub fn county_str(&self) -> Option<&str> {
        self.prefix(2)
    }

    /// The township code, a prefix of the code itself.
    pub fn township_str(&self) -> Option<&str> {
        self.prefix(3)
    }

    /// The lake's `city=` partition value: the city, or the province itself for province-level codes.
    pub fn city_partition(&self) -> String {
        self.city_partition_digits().as_str().to_owned()
    }

    /// [`Self::city_partition`] without allocating.
    pub fn city_partition_digits(&self) -> SixDigits {
        self.city_digits().unwrap_or_else(|| self.province_digits())
    }
}

/// The text of a [`RegionCode`]'s or a [`SixDigits`]' bytes, without checking them again.
fn digits_text(digits: &[u8]) -> &str {
    debug_assert!(digits.iter().all(u8::is_ascii_digit));
    // SAFETY: both types hold only ASCII digits, which are UTF-8: `RegionCode::parse` checks every
    // byte, and every other constructor (private to this module) copies bytes of a parsed code or
    // writes b'0'. Checking them again with `str::from_utf8` was 1.8 % of an offline run's
    // instructions (callgrind, 100 000 events: five columns of every row are made from them).
    unsafe { std::str::from_utf8_unchecked(digits) }
}

/// A 6-digit division code held inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SixDigits([u8; 6]);

impl SixDigits {
    pub fn as_str(&self) -> &str {
        digits_text(&self.0)
    }

    pub fn bytes(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Debug for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegionCode({})", self.as_str())
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the division-code table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub code: RegionCode,
    pub name: String,
    pub level: RegionLevel,
}

/// Error loading a division-code table.
#[derive(Debug, Clone, thiserror::Error)]
#[error("region table line {line}: {reason}")]
pub struct RegionTableError {
    line: usize,
    reason: String,
}

/// A versioned division-code table (`code,name,level,parent_code`).
#[derive(Debug, Clone)]
pub struct RegionTable {
    edition: &'static str,
    /// In the file's order (which is not the codes' order).
    regions: Vec<Region>,
    /// Where each code first appears in `regions`: a lookup runs per alert and per policy check,
    /// against some 67 000 rows.
    by_code: HashMap<RegionCode, usize>,
}

/// Cities whose townships sit directly below them (no county level), read from the shipped table.
fn countyless_cities() -> &'static [[u8; 4]] {
    static CITIES: std::sync::OnceLock<Vec<[u8; 4]>> = std::sync::OnceLock::new();
    CITIES.get_or_init(|| {
        let mut cities: Vec<[u8; 4]> = EDITION_2023
            .lines()
            .filter_map(|line| line.as_bytes().get(..12))
            .filter(|code| {
                code.iter().all(u8::is_ascii_digit)
                    && &code[4..6] == b"00"
                    && &code[6..9] != b"000"
                    && &code[2..4] != b"00"
            })
            .map(|code| [code[0], code[1], code[2], code[3]])
            .collect();
        cities.sort_unstable();
        cities.dedup();
        cities
    })
}

/// The 2023 edition (National Bureau of Statistics, cut-off 2023-06-30), shipped in `schemas/regions/`.
const EDITION_2023: &str = include_str!("../../schemas/regions/regions-2023.csv");

impl RegionTable {
    /// The 2023 edition shipped with the engine.
    pub fn edition_2023() -> Result<Self, RegionTableError> {
        Self::parse("2023", EDITION_2023)
    }

    /// The shipped edition ([`RegionTable::edition_2023`]), parsed and indexed once per process for
    /// every user of it (alerts, policies, the generator, the `regions` SQL table).
    pub fn shipped() -> Result<&'static Self, RegionTableError> {
        static TABLE: std::sync::OnceLock<Result<RegionTable, RegionTableError>> =
            std::sync::OnceLock::new();
        TABLE
            .get_or_init(Self::edition_2023)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Parses a `code,name,level,parent_code` CSV with a header line.
    pub fn parse(edition: &'static str, csv: &str) -> Result<Self, RegionTableError> {
        let mut regions = Vec::new();
        for (index, line) in csv.lines().enumerate().skip(1) {
            let fail = |reason: String| RegionTableError {
                line: index + 1,
                reason,
            };
            let mut fields = line.split(',');
            let (Some(code), Some(name), Some(level)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(fail("expected code,name,level,parent_code".into()));
            };
            let code = RegionCode::parse(code).map_err(|e| fail(format!("code {code}: {e}")))?;
            let level = match level {
                "province" => RegionLevel::Province,
                "city" => RegionLevel::City,
                "county" => RegionLevel::County,
                "township" => RegionLevel::Township,
                "village" => RegionLevel::Village,
                other => return Err(fail(format!("unknown level {other:?}"))),
            };
            regions.push(Region {
                code,
                name: name.to_owned(),
                level,
            });
        }
        let mut by_code = HashMap::with_capacity(regions.len());
        for (index, region) in regions.iter().enumerate() {
            by_code.entry(region.code).or_insert(index);
        }
        Ok(Self {
            edition,
            regions,
            by_code,
        })
    }

    pub fn edition(&self) -> &str {
        self.edition
    }

    /// Every region whose code starts with the given province's two digits.
    pub fn in_province<'t>(&'t self, province: &'t str) -> impl Iterator<Item = &'t Region> + 't {
        let prefix = province.get(..2).unwrap_or(province);
        self.regions
            .iter()
            .filter(move |r| r.code.as_str().starts_with(prefix))
    }

    /// Looks a code up.
    pub fn get(&self, code: &RegionCode) -> Option<&Region> {
        self.by_code.get(code).and_then(|&i| self.regions.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_and_rejects() {
        let cases: &[(&str, Result<RegionLevel, RegionCodeError>)] = &[
            ("410000000000", Ok(RegionLevel::Province)),
            ("410300000000", Ok(RegionLevel::City)),
            ("410328000000", Ok(RegionLevel::County)),
            ("410328100000", Ok(RegionLevel::Township)),
            ("410328100201", Ok(RegionLevel::Village)),
            ("41032810020", Err(RegionCodeError::Length(11))),
            ("4103281002011", Err(RegionCodeError::Length(13))),
            ("41032810020a", Err(RegionCodeError::NotDigits)),
            ("４１0328100201", Err(RegionCodeError::Length(12))),
            ("000328100201", Err(RegionCodeError::NoProvince)),
            (
                "410028100201",
                Err(RegionCodeError::BrokenHierarchy(RegionLevel::County)),
            ),
            (
                "410300100000",
                Err(RegionCodeError::BrokenHierarchy(RegionLevel::Township)),
            ),
            (
                "410328000201",
                Err(RegionCodeError::BrokenHierarchy(RegionLevel::Village)),
            ),
            // 东莞 has no counties: its townships sit directly below the city.
            ("441900003000", Ok(RegionLevel::Township)),
            ("441900003001", Ok(RegionLevel::Village)),
            // Guangzhou has districts, so the same shape is broken there.
            (
                "440100003000",
                Err(RegionCodeError::BrokenHierarchy(RegionLevel::Township)),
            ),
        ];
        for (code, expected) in cases {
            let got = RegionCode::parse(code).map(|c| c.level());
            match (expected, &got) {
                (Ok(level), Ok(got)) => assert_eq!(level, got, "{code}"),
                (Err(e), Err(g)) => assert_eq!(e, g, "{code}"),
                _ => panic!("{code}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn ancestors_are_prefixes_padded() {
        let village = RegionCode::parse("410328100201").unwrap();
        assert_eq!(village.province(), "410000");
        assert_eq!(village.city().as_deref(), Some("410300"));
        assert_eq!(village.county().as_deref(), Some("410328"));
        assert_eq!(village.township().as_deref(), Some("410328100"));
        assert_eq!(village.city_partition(), "410300");
        let province = RegionCode::parse("410000000000").unwrap();
        assert_eq!(province.city(), None);
        assert_eq!(province.county(), None);
        assert_eq!(province.city_partition(), "410000");
    }

    #[test]
    fn countyless_cities_come_from_the_table() {
        assert_eq!(countyless_cities(), &[*b"4419", *b"4420", *b"4604"]);
        let dongguan = RegionCode::parse("441900003000").unwrap();
        assert_eq!(dongguan.county(), None);
        assert_eq!(dongguan.township().as_deref(), Some("441900003"));
        assert_eq!(dongguan.city_partition(), "441900");
    }

    #[test]
    fn a_repeated_code_finds_its_first_row() {
        let table = RegionTable::parse(
            "test",
            "code,name,level,parent_code\n\
             441900000000,东莞市,city,440000000000\n\
             410328000000,洛宁县,county,410300000000\n\
             441900000000,东莞市(县级),county,441900000000\n",
        )
        .unwrap();
        let code = |c| RegionCode::parse(c).unwrap();
        let dongguan = table.get(&code("441900000000")).unwrap();
        assert_eq!(
            (dongguan.name.as_str(), dongguan.level),
            ("东莞市", RegionLevel::City)
        );
        assert_eq!(table.get(&code("410328000000")).unwrap().name, "洛宁县");
        assert!(table.get(&code("410300000000")).is_none());
    }

    #[test]
    fn the_shipped_table_is_parsed_once_and_is_edition_2023() {
        let shipped = RegionTable::shipped().unwrap();
        assert!(std::ptr::eq(shipped, RegionTable::shipped().unwrap()));
        assert_eq!(shipped.edition(), "2023");
        assert_eq!(
            shipped.regions.len(),
            RegionTable::edition_2023().unwrap().regions.len()
        );
    }

    #[test]
    fn edition_2023_loads_and_is_consistent() {
        let table = RegionTable::edition_2023().unwrap();
        assert!(table.regions.len() > 60_000);
        let luoning = table
            .get(&RegionCode::parse("410328000000").unwrap())
            .unwrap();
        assert_eq!(luoning.name, "洛宁县");
        assert_eq!(luoning.level, RegionLevel::County);
        // Every row's level agrees with the shape of its code.
        // A code never names a finer level than its row says. (The table repeats some codes as
        // placeholders one level down: a city without counties as its own county, 金门县's
        // township and village rows.)
        for region in &table.regions {
            assert!(
                region.code.level() <= region.level,
                "{} {:?}",
                region.code,
                region.level
            );
        }
    }
}
