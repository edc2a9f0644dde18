//! The load generator's traffic decodes as it is labelled: every record meant valid is
//! accepted by the core's decoder and every broken one rejected, and each kind is present.

use costline_loadgen::{RecordKind, TrafficGenerator, TrafficMix};

#[test]
fn generated_records_decode_as_labelled() {
    let mut kinds = [0usize; 3];
    let mut stream = costline_core::EventDecoder::default();
    for record in TrafficGenerator::new(TrafficMix::new(1, 1_700_000_000_000)).take(20_000) {
        let decoded = costline_core::decode_event(&record.payload);
        // One decoder for the stream, as a partition's counter has: it reads each record the same.
        assert_eq!(stream.decode(&record.payload), decoded);
        match record.kind {
            RecordKind::Invalid => assert!(decoded.is_err(), "{:?}", String::from_utf8_lossy(&record.payload)),
            _ => assert!(decoded.is_ok(), "{:?}: {:?}", decoded, String::from_utf8_lossy(&record.payload)),
        }
        kinds[record.kind as usize] += 1;
    }
    assert!(kinds.iter().all(|&k| k > 100), "{kinds:?}");
}
