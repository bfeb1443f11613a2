use parti_strategy::PartitionId;
use proptest::prelude::*;

use super::*;

fn assignment() -> AssignmentRecord {
    AssignmentRecord {
        version: 42,
        term: 7,
        holder: 3,
        lifecycle: Lifecycle::Rebalancing,
        partitions: vec![
            Grant {
                partition: PartitionId::from_keys(["orders", "eu"]).unwrap(),
                token: FencingToken {
                    term: 7,
                    version: 40,
                },
            },
            Grant {
                partition: PartitionId::new("p-9").unwrap(),
                token: FencingToken {
                    term: 6,
                    version: 12,
                },
            },
        ],
    }
}

#[test]
fn every_record_round_trips() {
    let claim = IdClaim {
        instance_id: "i-1".into(),
        host: "box".into(),
        since_unix_ms: 1_700_000_000_000,
        identity: Some("pod-3".into()),
        parked: true,
    };
    assert_eq!(IdClaim::decode(&claim.encode().unwrap()).unwrap(), claim);
    let leader = LeaderRecord {
        worker_id: worker_id(3),
        instance_id: "i-2".into(),
        term: 12,
        floor: 0,
        phase: Lifecycle::Scaling,
    };
    assert_eq!(
        LeaderRecord::decode(&leader.encode().unwrap()).unwrap(),
        leader
    );
    let beat = Heartbeat {
        instance_id: "i-3".into(),
        session: 12,
        floor: 0,
        applied_version: 9,
        term_seen: 2,
    };
    assert_eq!(Heartbeat::decode(&beat.encode().unwrap()).unwrap(), beat);
    let record = assignment();
    assert_eq!(
        AssignmentRecord::decode(&record.encode().unwrap()).unwrap(),
        record
    );
}

#[test]
fn values_start_with_the_format_version_and_are_compact() {
    let bytes = assignment().encode().unwrap();
    assert_eq!(bytes[0], FORMAT_VERSION);
    assert!(bytes.len() < 40, "{} bytes", bytes.len());
}

#[test]
fn empty_value_is_an_error() {
    assert_eq!(
        Heartbeat::decode(&[]),
        Err(WireError::Empty { kind: "heartbeat" })
    );
}

#[test]
fn foreign_values_are_rejected_by_version() {
    let err = Heartbeat::decode(b"{\"instance_id\":\"x\"}").unwrap_err();
    assert_eq!(
        err,
        WireError::UnsupportedVersion {
            kind: "heartbeat",
            found: b'{'
        }
    );
    assert!(err.to_string().contains("another program"));
}

#[test]
fn truncated_values_are_malformed() {
    let bytes = assignment().encode().unwrap();
    for len in 1..bytes.len() {
        assert!(
            AssignmentRecord::decode(&bytes[..len]).is_err(),
            "prefix of {len} bytes decoded"
        );
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = Heartbeat {
        instance_id: "i".into(),
        session: 0,
        floor: 4,
        applied_version: 1,
        term_seen: 1,
    }
    .encode()
    .unwrap()
    .to_vec();
    bytes.push(0);
    assert_eq!(
        Heartbeat::decode(&bytes),
        Err(WireError::TrailingBytes {
            kind: "heartbeat",
            extra: 1
        })
    );
}

#[test]
fn invalid_partition_ids_inside_a_record_are_rejected() {
    // A record whose partition id is not a valid id ("a b" has a space).
    let mut bytes = vec![FORMAT_VERSION];
    bytes.extend(
        postcard::to_allocvec(&(1u64, 1u64, Lifecycle::Stable, vec![("a b", (1u64, 1u64))]))
            .unwrap(),
    );
    let err = AssignmentRecord::decode(&bytes).unwrap_err();
    assert!(matches!(err, WireError::Malformed { .. }), "{err}");
}

#[test]
fn worker_ids_and_numbers() {
    assert_eq!(worker_id(12).as_str(), "worker-12");
    assert_eq!(worker_number("worker-12"), Some(12));
    for not_ours in [
        "worker-",
        "worker-01",
        "worker--1",
        "worker-x",
        "leader",
        "worker-99999999999",
    ] {
        assert_eq!(worker_number(not_ours), None, "{not_ours}");
    }
}

#[test]
fn fencing_tokens_order_by_term_then_version() {
    let t = |term, version| FencingToken { term, version };
    assert!(t(2, 1) > t(1, 100));
    assert!(t(2, 5) > t(2, 4));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = IdClaim::decode(&bytes);
        let _ = LeaderRecord::decode(&bytes);
        let _ = Heartbeat::decode(&bytes);
        let _ = AssignmentRecord::decode(&bytes);
    }

    #[test]
    fn decoding_versioned_garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = vec![FORMAT_VERSION];
        bytes.extend(body);
        let _ = IdClaim::decode(&bytes);
        let _ = LeaderRecord::decode(&bytes);
        let _ = Heartbeat::decode(&bytes);
        let _ = AssignmentRecord::decode(&bytes);
    }

    #[test]
    fn corrupting_one_byte_never_panics(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = assignment().encode().unwrap().to_vec();
        let i = index.index(bytes.len());
        bytes[i] = byte;
        let _ = AssignmentRecord::decode(&bytes);
    }

    #[test]
    fn heartbeats_round_trip(instance in "[a-z0-9-]{0,40}", applied in any::<u64>(), term in any::<u64>()) {
        let beat = Heartbeat { instance_id: instance, session: applied / 2, floor: term, applied_version: applied, term_seen: term };
        prop_assert_eq!(Heartbeat::decode(&beat.encode().unwrap()).unwrap(), beat);
    }
}
