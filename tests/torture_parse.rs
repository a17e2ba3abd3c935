//! Every RFC 4475 / RFC 5118 torture message through the parser: valid ones parse, invalid
//! ones are refused (with a response when they are requests), nothing panics.

use bytes::Bytes;
use pasarela::sip::parse::{parse_message, Framing, Limits};

fn shared() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sip-torture")
}

#[test]
fn torture_messages_parse_as_the_manifest_expects() {
    let manifest = std::fs::read_to_string(shared().join("MANIFEST.tsv"))
        .expect("tests/data/sip-torture/MANIFEST.tsv is part of the repository");
    let mut failures = Vec::new();
    for line in manifest.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (file, class) = (cols[0], cols[3]);
        let bytes = std::fs::read(shared().join(file)).expect("torture file");
        let result = parse_message(Bytes::from(bytes), Framing::Datagram, &Limits::default());
        // Files whose invalidity is semantic (Date, broadcast Via …) or that the RFC lets a
        // receiver accept liberally are allowed either way.
        let either = [
            "rfc4475/baddate.dat",
            "rfc4475/escruri.dat",
            "rfc4475/test.dat",
        ];
        let ok = match (class, &result) {
            _ if either.contains(&file) => true,
            ("VALID" | "VALID-SEMANTIC", Ok(_)) => true,
            ("INVALID", Err(_)) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!("{file} ({class}): {result:?}"));
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}
