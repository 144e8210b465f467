//! Kafka's default key partitioner: `positive(murmur2(key)) % partitions`,
//! bit for bit as Java's `org.apache.kafka.common.utils.Utils.murmur2`, so
//! `weir simulate --output` can name the partition a Java (or librdkafka
//! `murmur2_random`) producer would pick without asking a broker.

/// Java's `Utils.murmur2` (MurmurHash2, seed `0x9747b28c`), as a signed
/// 32-bit value like Java returns it.
pub(crate) fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java's `int` arithmetic wraps; u32 wrapping ops give the same bits.
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks: for a key,
/// `Utils.toPositive(Utils.murmur2(key)) % partitions`; for no key,
/// `fallback` (the caller's choice, e.g. the input partition), modulo the
/// partition count. `partitions` below 1 is treated as 1. The one
/// implementation: `weir run`, `weir test` and `weir simulate` all place
/// records with it, so they agree with each other and with Java producers.
pub fn partition_for(key: Option<&[u8]>, partitions: i32, fallback: i32) -> i32 {
    let partitions = partitions.max(1);
    match key {
        Some(k) => (murmur2(k) & 0x7fff_ffff) % partitions,
        None => fallback.rem_euclid(partitions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test vectors from Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_java_utils_test_vectors() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                *expected,
                "murmur2({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// Computed with Kafka 4.4's `Utils.murmur2` / `toPositive(..) % 3` on
    /// the UTF-8 bytes of real (and one synthetic) parking codes.
    #[test]
    fn murmur2_matches_java_on_parking_codes() {
        let cases: &[(&str, i32, i32)] = &[
            ("1587410", 1_294_139_063, 2),
            ("171721", -2_109_936_414, 2),
            ("9086001", -2_006_831_244, 2),
            ("1426397", -1_374_505_262, 0),
            ("1386536", 302_356_850, 2),
            ("홍대", -46_568_253, 2),
        ];
        for &(key, hash, partition) in cases {
            assert_eq!(murmur2(key.as_bytes()), hash, "murmur2({key})");
            assert_eq!(
                partition_for(Some(key.as_bytes()), 3, 0),
                partition,
                "partition of {key}"
            );
        }
    }

    #[test]
    fn partition_is_positive_murmur2_modulo_partitions() {
        // murmur2("21") = -973932308; & 0x7fffffff = 1173551340.
        assert_eq!(partition_for(Some(b"21"), 3, 0), 1_173_551_340 % 3);
        assert_eq!(partition_for(Some(b"21"), 1, 0), 0);
        // No key: the fallback, kept in range.
        assert_eq!(partition_for(None, 3, 2), 2);
        assert_eq!(partition_for(None, 3, 4), 1);
        assert_eq!(partition_for(None, 0, 5), 0);
        for key in ["1587410", "171721", "9086001", ""] {
            let p = partition_for(Some(key.as_bytes()), 3, 0);
            assert!((0..3).contains(&p));
        }
    }
}
