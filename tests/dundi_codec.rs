//! The DUNDi codec against real Asterisk 20 traffic: every packet of both captures decodes to
//! the fields of the reference listings and re-encodes byte for byte; random, truncated and
//! mutated datagrams never panic the decoder.

mod dundi_common;

use dundi_common::*;
use pasarela::routing::dundi::wire::Packet;

fn check_capture(name: &str) -> usize {
    let caps = read_pcap(&testdata().join(format!("{name}.pcap")));
    let listed = read_listing(&testdata().join(format!("{name}-decoded.txt")));
    assert_eq!(caps.len(), listed.len(), "{name}: packet count");
    let mut inner_checked = 0;
    for (d, l) in caps.iter().zip(&listed) {
        let ctx = format!("{name} #{}", l.number);
        assert_eq!(d.payload, l.bytes, "{ctx}: pcap payload vs listing hex");
        assert_eq!(d.src.to_string(), l.src, "{ctx}: source");
        assert_eq!(d.dst.to_string(), l.dst, "{ctx}: destination");
        let p = Packet::decode(&d.payload).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(render_header(&p.header), l.header, "{ctx}: header");
        assert_eq!(
            render_all(&p.ies, &d.payload[8..]),
            l.ies,
            "{ctx}: elements"
        );
        assert_eq!(p.encode().unwrap(), d.payload, "{ctx}: re-encoding");
        if let Some(inner) = &l.inner {
            let mut full = d.payload[..6].to_vec();
            full.extend_from_slice(inner);
            let ip = Packet::decode(&full).unwrap_or_else(|e| panic!("{ctx} inner: {e}"));
            assert_eq!(
                render_all(&ip.ies, &full[8..]),
                l.inner_ies,
                "{ctx}: inner elements"
            );
            assert_eq!(ip.encode().unwrap(), full, "{ctx}: inner re-encoding");
            inner_checked += 1;
        }
    }
    inner_checked
}

#[test]
fn plaintext_capture_decodes_and_reencodes() {
    assert_eq!(check_capture("plaintext"), 0);
}

#[test]
fn encrypted_capture_decodes_and_reencodes() {
    assert_eq!(check_capture("encrypted"), 12);
}

/// xorshift64*, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn random_and_mutated_datagrams_never_panic() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for name in ["plaintext", "encrypted"] {
        for d in read_pcap(&testdata().join(format!("{name}.pcap"))) {
            seeds.push(d.payload);
        }
    }
    let mut rng = Rng(0x5eed_d0d1_u64);
    let mut ok = 0usize;
    for i in 0..100_000 {
        let dgram: Vec<u8> = match i % 4 {
            0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            1 => {
                let s = &seeds[rng.below(seeds.len())];
                s[..rng.below(s.len() + 1)].to_vec()
            }
            2 => {
                let mut s = seeds[rng.below(seeds.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(s.len());
                    s[at] = rng.next() as u8;
                }
                s
            }
            _ => {
                let mut s = seeds[rng.below(seeds.len())].clone();
                let extra = rng.below(20);
                s.extend((0..extra).map(|_| rng.next() as u8));
                if rng.below(2) == 0 {
                    s.extend(std::iter::repeat_n(0u8, rng.below(9000)));
                }
                s
            }
        };
        if let Ok(p) = Packet::decode(&dgram) {
            ok += 1;
            // Whatever decodes must encode again without panicking, and to the same bytes
            // unless the ENCDATA length byte was mutated (readers ignore it).
            if let Ok(again) = p.encode() {
                assert_eq!(Packet::decode(&again).as_ref(), Ok(&p));
            }
        }
    }
    assert!(ok > 1000, "only {ok} datagrams decoded");
}
