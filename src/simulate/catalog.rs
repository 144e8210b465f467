//! The simulated city: Seoul's real-time hotspots and their parking lots.
//!
//! Built once from the data compiled into the binary (`data/`): the 30
//! hotspots the original pipeline polled and one real captured poll. Real
//! lots keep their code, name, type, capacity, fees and coordinates; regions
//! with fewer than [`MIN_LOTS`] real lots are topped up with synthetic lots
//! whose codes and attributes derive from the region code alone, so the
//! catalog is the same on every run and every machine, whatever the seed.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use super::SimulateError;

/// Fewest lots a simulated region has; regions below are topped up.
pub(crate) const MIN_LOTS: usize = 5;
/// Most lots a simulated region keeps (busy real regions list ~100).
pub(crate) const MAX_LOTS: usize = 40;
/// Share of distinct lots that report `IS_REALTIME_STATUS_PROVIDED = "N"`.
pub(crate) const NOT_REALTIME_SHARE: f64 = 0.10;

const HOTSPOTS_JSON: &str = include_str!("../../data/seoul_hotspots.json");
const POLL_JSONL: &str = include_str!("../../data/citydata_parking_poll.jsonl");

/// The value every field of the "no parking data" sentinel record holds.
const SENTINEL: &str = "정보 없음";

/// Centres for hotspots whose real poll has no lot to place synthetic lots
/// around (고척돔 returned only the sentinel record).
const FALLBACK_CENTRES: &[(&str, f64, f64)] = &[("POI086", 37.498_2, 126.867_2)];

/// One parking lot with everything that does not change between polls.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lot {
    pub code: String,
    pub name: String,
    /// The feed's `TYPE` (`NS` on-street, `NW` off-street, `BP`/`BS`/`NP` …).
    pub lot_type: String,
    pub capacity: u32,
    /// Stable per lot: whether it reports occupancy (`"Y"`) or not (`"N"`).
    pub realtime: bool,
    pub pay_yn: String,
    pub base_rate: String,
    pub base_time: String,
    pub add_rate: String,
    pub add_time: String,
    pub latitude: String,
    pub longitude: String,
    /// Made up to fill a region with too few real lots.
    pub synthetic: bool,
    /// Occupancy profile, fixed per lot.
    pub profile: LotProfile,
}

/// How full a lot gets: `floor + (peak - floor) * curve(hour + shift_hours)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LotProfile {
    /// Occupancy share at the busiest time of day (above 1 saturates).
    pub peak: f64,
    /// Occupancy share in the dead of night.
    pub floor: f64,
    /// Hours the lot's day runs late (positive) or early.
    pub shift_hours: f64,
}

/// A hotspot (`POIxxx`) and the lots its poll returns.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Region {
    pub code: String,
    pub name: String,
    /// Indexes into [`Catalog::lots`]. A lot may belong to several regions,
    /// as in the real feed.
    pub lots: Vec<usize>,
}

/// All regions and distinct lots.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Catalog {
    pub regions: Vec<Region>,
    pub lots: Vec<Lot>,
}

impl Catalog {
    /// One poll sweep, region by region: `(region index, lot index)`.
    pub(crate) fn sweep(&self) -> Vec<(usize, usize)> {
        self.regions
            .iter()
            .enumerate()
            .flat_map(|(r, region)| region.lots.iter().map(move |&l| (r, l)))
            .collect()
    }
}

/// Lookups by code, for the tests.
#[cfg(test)]
impl Catalog {
    fn region(&self, code: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.code == code)
    }

    fn lot(&self, code: &str) -> Option<&Lot> {
        self.lots.iter().find(|l| l.code == code)
    }
}

/// The catalog, parsed from the embedded data on first use.
pub(crate) fn catalog() -> Result<&'static Catalog, SimulateError> {
    static CATALOG: OnceLock<Result<Catalog, String>> = OnceLock::new();
    CATALOG
        .get_or_init(|| build(HOTSPOTS_JSON, POLL_JSONL))
        .as_ref()
        .map_err(|e| SimulateError::Catalog(e.clone()))
}

#[derive(Deserialize)]
struct Hotspot {
    code: String,
    name: String,
}

/// One line of the captured poll (the `parking_status` message format).
#[derive(Deserialize, Clone)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
struct PollRecord {
    region_code: String,
    parking_name: String,
    parking_code: String,
    #[serde(rename = "TYPE")]
    lot_type: String,
    capacity: String,
    is_realtime_status_provided: String,
    pay_yn: String,
    base_rate: String,
    base_time: String,
    add_rate: String,
    add_time: String,
    latitude: String,
    longitude: String,
}

fn build(hotspots_json: &str, poll_jsonl: &str) -> Result<Catalog, String> {
    let hotspots: Vec<Hotspot> =
        serde_json::from_str(hotspots_json).map_err(|e| format!("seoul_hotspots.json: {e}"))?;

    // Distinct real lots (a lot polled as "Y" in one region and "N" in
    // another keeps its "Y" version, which has the live coordinates), and
    // per region the lot codes in poll order, deduplicated.
    let mut real: HashMap<String, PollRecord> = HashMap::new();
    let mut real_order: Vec<String> = Vec::new();
    let mut by_region: HashMap<String, Vec<String>> = HashMap::new();
    for (n, line) in poll_jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec: PollRecord =
            serde_json::from_str(line).map_err(|e| format!("citydata_parking_poll.jsonl line {}: {e}", n + 1))?;
        if rec.parking_code == SENTINEL || rec.capacity.parse::<u32>().is_err() {
            continue;
        }
        let codes = by_region.entry(rec.region_code.clone()).or_default();
        if !codes.contains(&rec.parking_code) {
            codes.push(rec.parking_code.clone());
        }
        match real.get(&rec.parking_code) {
            None => {
                real_order.push(rec.parking_code.clone());
                real.insert(rec.parking_code.clone(), rec);
            }
            Some(old) if old.is_realtime_status_provided != "Y" && rec.is_realtime_status_provided == "Y" => {
                real.insert(rec.parking_code.clone(), rec);
            }
            Some(_) => {}
        }
    }

    let mut lots: Vec<Lot> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut regions = Vec::with_capacity(hotspots.len());
    for spot in &hotspots {
        let mut codes = by_region.get(&spot.code).cloned().unwrap_or_default();
        if codes.len() > MAX_LOTS {
            // Keep the lots that were live in the real poll, then poll order.
            let live: Vec<String> = codes
                .iter()
                .filter(|c| real.get(*c).is_some_and(|r| r.is_realtime_status_provided == "Y"))
                .cloned()
                .collect();
            let mut keep: Vec<String> = live.iter().take(MAX_LOTS).cloned().collect();
            for c in &codes {
                if keep.len() >= MAX_LOTS {
                    break;
                }
                if !keep.contains(c) {
                    keep.push(c.clone());
                }
            }
            codes.retain(|c| keep.contains(c));
        }

        let mut lot_ids = Vec::new();
        for code in &codes {
            let id = match index.get(code) {
                Some(&id) => id,
                None => {
                    let rec = real.get(code).ok_or_else(|| format!("lot {code} vanished"))?;
                    lots.push(real_lot(rec)?);
                    index.insert(code.clone(), lots.len() - 1);
                    lots.len() - 1
                }
            };
            lot_ids.push(id);
        }

        if lot_ids.len() < MIN_LOTS {
            let (lat, lon) = centre(&spot.code, &lot_ids, &lots)?;
            let target = MIN_LOTS + (mix(&spot.code, "lots") % 4) as usize;
            let mut k = 0;
            while lot_ids.len() < target {
                k += 1;
                let lot = synthetic_lot(spot, k, lat, lon)?;
                if index.contains_key(&lot.code) {
                    return Err(format!("synthetic lot code {} collides", lot.code));
                }
                index.insert(lot.code.clone(), lots.len());
                lots.push(lot);
                lot_ids.push(lots.len() - 1);
            }
        }
        regions.push(Region {
            code: spot.code.clone(),
            name: spot.name.clone(),
            lots: lot_ids,
        });
    }

    assign_not_realtime(&mut lots, &real);
    Ok(Catalog { regions, lots })
}

fn real_lot(rec: &PollRecord) -> Result<Lot, String> {
    let capacity = rec
        .capacity
        .parse::<u32>()
        .map_err(|e| format!("lot {}: capacity {:?}: {e}", rec.parking_code, rec.capacity))?;
    Ok(Lot {
        code: rec.parking_code.clone(),
        name: rec.parking_name.clone(),
        lot_type: rec.lot_type.clone(),
        capacity,
        realtime: true,
        pay_yn: rec.pay_yn.clone(),
        base_rate: rec.base_rate.clone(),
        base_time: rec.base_time.clone(),
        add_rate: rec.add_rate.clone(),
        add_time: rec.add_time.clone(),
        latitude: rec.latitude.clone(),
        longitude: rec.longitude.clone(),
        synthetic: false,
        profile: profile(&rec.parking_code, &rec.lot_type),
    })
}

/// Where a region's synthetic lots go: around its real lots, or a known
/// centre for a region with none.
fn centre(region_code: &str, lot_ids: &[usize], lots: &[Lot]) -> Result<(f64, f64), String> {
    let coords: Vec<(f64, f64)> = lot_ids
        .iter()
        .filter_map(|&i| {
            let lot = &lots[i];
            Some((lot.latitude.parse::<f64>().ok()?, lot.longitude.parse::<f64>().ok()?))
        })
        .collect();
    if coords.is_empty() {
        return FALLBACK_CENTRES
            .iter()
            .find(|(code, _, _)| *code == region_code)
            .map(|&(_, lat, lon)| (lat, lon))
            .ok_or_else(|| format!("region {region_code} has no lots and no fallback centre"));
    }
    let n = coords.len() as f64;
    let lat = coords.iter().map(|c| c.0).sum::<f64>() / n;
    let lon = coords.iter().map(|c| c.1).sum::<f64>() / n;
    Ok((lat, lon))
}

/// Public-lot tariffs as the city publishes them:
/// `(PAY_YN, BASE_RATE, BASE_TIME, ADD_RATE, ADD_TIME)`. The free lot has
/// empty time fields, exactly like the real feed's free lots.
const SYNTHETIC_TARIFFS: &[(&str, &str, &str, &str, &str)] = &[
    ("Y", "250", "5", "250", "5"),
    ("Y", "500", "10", "500", "10"),
    ("Y", "1000", "30", "500", "10"),
    ("Y", "2000", "60", "1000", "30"),
    ("Y", "450", "", "450", ""),
    ("N", "0", "", "0", ""),
];
const SYNTHETIC_CAPACITIES: &[u32] = &[12, 20, 28, 35, 48, 60, 85, 120, 150, 210];

fn synthetic_lot(spot: &Hotspot, k: usize, lat: f64, lon: f64) -> Result<Lot, String> {
    let number: u32 = spot
        .code
        .trim_start_matches("POI")
        .parse()
        .map_err(|e| format!("hotspot code {:?}: {e}", spot.code))?;
    // Real lot codes are 6–7 digit numbers below 4,000,000; synthetic ones
    // are 9PPPKKK (hotspot number, lot number) and cannot collide with them.
    let code = format!("9{number:03}{k:03}");
    let salt = |what: &str| mix(&code, what);
    let tariff = SYNTHETIC_TARIFFS[(salt("tariff") % SYNTHETIC_TARIFFS.len() as u64) as usize];
    let capacity = SYNTHETIC_CAPACITIES[(salt("capacity") % SYNTHETIC_CAPACITIES.len() as u64) as usize];
    let lot_type = if capacity < 40 { "NS" } else { "NW" };
    // Within about 400 m of the region's lots.
    let lat = lat + (unit(salt("lat")) - 0.5) * 0.007;
    let lon = lon + (unit(salt("lon")) - 0.5) * 0.009;
    Ok(Lot {
        name: format!("{} 공영주차장 {k}", spot.name),
        lot_type: lot_type.to_string(),
        capacity,
        realtime: true,
        pay_yn: tariff.0.to_string(),
        base_rate: tariff.1.to_string(),
        base_time: tariff.2.to_string(),
        add_rate: tariff.3.to_string(),
        add_time: tariff.4.to_string(),
        latitude: format!("{lat:.8}"),
        longitude: format!("{lon:.8}"),
        synthetic: true,
        profile: profile(&code, lot_type),
        code,
    })
}

fn profile(code: &str, lot_type: &str) -> LotProfile {
    let peak = 0.55 + 0.5 * unit(mix(code, "peak"));
    let floor = 0.02 + 0.14 * unit(mix(code, "floor"));
    let mut shift_hours = (unit(mix(code, "shift")) - 0.5) * 2.0;
    if lot_type == "BP" {
        // Han River park lots fill in the afternoon and evening.
        shift_hours += 1.5;
    }
    LotProfile {
        peak,
        floor,
        shift_hours,
    }
}

/// Mark [`NOT_REALTIME_SHARE`] of the distinct lots as not reporting
/// occupancy, preferring lots that did not report in the real poll; the
/// choice depends only on lot codes.
fn assign_not_realtime(lots: &mut [Lot], real: &HashMap<String, PollRecord>) {
    let target = (lots.len() as f64 * NOT_REALTIME_SHARE).round() as usize;
    let mut order: Vec<usize> = (0..lots.len()).collect();
    let was_live = |lot: &Lot| {
        real.get(&lot.code)
            .is_some_and(|r| r.is_realtime_status_provided == "Y")
    };
    order.sort_by_key(|&i| {
        (
            was_live(&lots[i]) || lots[i].synthetic,
            mix(&lots[i].code, "realtime"),
            i,
        )
    });
    for &i in order.iter().take(target) {
        lots[i].realtime = false;
    }
}

/// A stable 64-bit hash of `(key, salt)`: FNV-1a then a SplitMix64
/// finaliser. Unlike `std`'s hasher it is fixed forever, which keeps the
/// catalog identical across builds.
pub(crate) fn mix(key: &str, salt: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0xff]).chain(salt.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A hash mapped to `[0, 1)`.
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_has_real_hotspots_with_5_to_40_lots() {
        let cat = catalog().expect("catalog");
        assert!(cat.regions.len() >= 20, "{} regions", cat.regions.len());
        for region in &cat.regions {
            assert!(
                (MIN_LOTS..=MAX_LOTS).contains(&region.lots.len()),
                "{} {} has {} lots",
                region.code,
                region.name,
                region.lots.len()
            );
            let mut seen = std::collections::HashSet::new();
            for &l in &region.lots {
                assert!(seen.insert(l), "{} lists lot {} twice", region.code, cat.lots[l].code);
            }
        }
        let hongdae = cat.region("POI007").expect("POI007 present");
        assert_eq!(hongdae.name, "홍대 관광특구");
        // Real lots from the captured poll, with their real attributes.
        let lot = cat.lot("1587410").expect("real lot 1587410");
        assert_eq!(lot.name, "공유) 9-88(구)");
        assert_eq!(lot.capacity, 22);
        assert_eq!(lot.latitude, "37.55639535");
        assert!(hongdae.lots.iter().any(|&l| cat.lots[l].code == "1587410"));
        let sejong = cat.lot("171721").expect("real lot 171721");
        assert_eq!(sejong.capacity, 1260);
        // The sentinel record is not a lot.
        assert!(cat.lots.iter().all(|l| l.code != SENTINEL && l.name != SENTINEL));
    }

    #[test]
    fn small_regions_get_stable_synthetic_lots_near_their_real_ones() {
        let cat = catalog().expect("catalog");
        // 고척돔 has no real lot in the poll; 용리단길 has one.
        let gocheok = cat.region("POI086").expect("POI086");
        assert!(gocheok.lots.iter().all(|&l| cat.lots[l].synthetic));
        let first = &cat.lots[gocheok.lots[0]];
        assert_eq!(first.code, "9086001");
        assert_eq!(first.name, "고척돔 공영주차장 1");
        let yongni = cat.region("POI076").expect("POI076");
        assert_eq!(yongni.lots.iter().filter(|&&l| !cat.lots[l].synthetic).count(), 1);
        let real = &cat.lots[yongni.lots[0]];
        let (rlat, rlon): (f64, f64) = (real.latitude.parse().unwrap(), real.longitude.parse().unwrap());
        for &l in &yongni.lots[1..] {
            let lot = &cat.lots[l];
            assert!(lot.synthetic);
            assert!(lot.name.starts_with("용리단길 공영주차장 "), "{}", lot.name);
            let lat: f64 = lot.latitude.parse().unwrap();
            let lon: f64 = lot.longitude.parse().unwrap();
            assert!((lat - rlat).abs() < 0.01 && (lon - rlon).abs() < 0.01, "{lat},{lon}");
            assert!(lot.capacity > 0);
        }
        // Building again gives the same catalog.
        assert_eq!(&build(HOTSPOTS_JSON, POLL_JSONL).unwrap(), cat);
    }

    #[test]
    fn about_ten_percent_of_lots_are_not_realtime() {
        let cat = catalog().expect("catalog");
        let n = cat.lots.iter().filter(|l| !l.realtime).count();
        let share = n as f64 / cat.lots.len() as f64;
        assert!((0.05..=0.15).contains(&share), "{n} of {} lots are N", cat.lots.len());
        let entries = cat.sweep();
        let n = entries.iter().filter(|&&(_, l)| !cat.lots[l].realtime).count();
        let share = n as f64 / entries.len() as f64;
        assert!(
            (0.05..=0.15).contains(&share),
            "{n} of {} sweep entries are N",
            entries.len()
        );
    }

    #[test]
    fn some_lots_have_empty_fee_time_fields_like_the_real_feed() {
        let cat = catalog().expect("catalog");
        assert!(cat.lots.iter().any(|l| l.base_time.is_empty() && l.add_time.is_empty()));
        assert!(cat.lots.iter().any(|l| !l.base_time.is_empty()));
    }
}
