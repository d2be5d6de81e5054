//! One named test per way a segment file can be damaged: each asserts the exact error
//! variant, and that the whole blocks before the damage are still read.

mod util;

use retrace_segment::format::{FRAME_HEADER_LEN, PREFIX_LEN};
use retrace_segment::*;
use util::*;

const BLOCKS: usize = 3;
const PER_BLOCK: usize = 40;

/// A segment with three blocks of `PER_BLOCK` events, and the events of each block.
fn segment(seal: bool) -> (Vec<u8>, Vec<Vec<Event>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.rseg");
    let opts = SegmentWriterOptions {
        sync: false,
        ..SegmentWriterOptions::default()
    };
    let mut w = SegmentWriter::create_with(&path, &header(1), opts).expect("create");
    let mut blocks = Vec::new();
    for b in 0..BLOCKS {
        let evs = sample_events(1_000_000 * (b as u64 + 1), PER_BLOCK);
        for e in &evs {
            w.append(e).expect("append");
        }
        w.flush().expect("flush");
        blocks.push(evs);
    }
    if seal {
        w.seal().expect("seal");
    }
    (std::fs::read(&path).expect("read"), blocks)
}

fn offsets(bytes: &[u8]) -> Vec<u64> {
    let r = SegmentReader::from_bytes(bytes.to_vec()).expect("valid segment");
    r.blocks().iter().map(|b| b.offset).collect()
}

fn fix_prefix_crc(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[0..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
}

fn fix_frame_crc(b: &mut [u8], off: usize) {
    let crc = crc32fast::hash(&b[off..off + 36]);
    b[off + 36..off + 40].copy_from_slice(&crc.to_le_bytes());
}

/// Asserts blocks `0..n` read back as written.
fn first_blocks_read(r: &SegmentReader, blocks: &[Vec<Event>], n: usize) {
    assert!(
        r.blocks().len() >= n,
        "only {} blocks found",
        r.blocks().len()
    );
    for (i, b) in blocks.iter().enumerate().take(n) {
        assert_eq!(
            &r.read_block(i)
                .expect("whole block before the damage reads"),
            b
        );
    }
}

#[test]
fn empty_file() {
    assert!(matches!(
        SegmentReader::from_bytes(Vec::new()),
        Err(SegmentError::Empty)
    ));
}

#[test]
fn bad_magic() {
    let (mut b, _) = segment(true);
    b[1] ^= 0x20;
    assert!(matches!(
        SegmentReader::from_bytes(b),
        Err(SegmentError::NotASegment)
    ));
    let text = b"hello, this is not a segment at all".to_vec();
    let err = SegmentReader::from_bytes(text).expect_err("text is not a segment");
    assert!(matches!(err, SegmentError::NotASegment));
    assert_eq!(err.to_string(), "not a retrace segment");
}

#[test]
fn unsupported_version_too_new() {
    let (mut b, _) = segment(true);
    let next = FORMAT_VERSION + 1;
    b[8..10].copy_from_slice(&next.to_le_bytes());
    b[10..12].copy_from_slice(&next.to_le_bytes());
    fix_prefix_crc(&mut b);
    let err = SegmentReader::from_bytes(b).expect_err("too new");
    assert!(matches!(
        err,
        SegmentError::UnsupportedVersion {
            found,
            oldest: 1,
            newest: FORMAT_VERSION
        } if found == next
    ));
    let msg = err.to_string();
    let range = format!("1 to {FORMAT_VERSION}");
    assert!(
        msg.contains(&format!("version {next}")) && msg.contains(&range),
        "{msg}"
    );
}

#[test]
fn newer_version_readable_by_old_readers_is_accepted() {
    // A newer writer that declares this reader compatible (additive change).
    let (mut b, blocks) = segment(true);
    let next = FORMAT_VERSION + 1;
    b[8..10].copy_from_slice(&next.to_le_bytes());
    b[10..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    fix_prefix_crc(&mut b);
    let r = SegmentReader::from_bytes(b).expect("min_reader_version of this build is readable");
    assert_eq!(r.header().format_version, next);
    first_blocks_read(&r, &blocks, BLOCKS);
}

#[test]
fn unsupported_version_too_old() {
    let (mut b, _) = segment(true);
    b[8..10].copy_from_slice(&0u16.to_le_bytes());
    b[10..12].copy_from_slice(&0u16.to_le_bytes());
    fix_prefix_crc(&mut b);
    let err = SegmentReader::from_bytes(b).expect_err("too old");
    assert!(matches!(
        err,
        SegmentError::UnsupportedVersion {
            found: 0,
            oldest: 1,
            newest: FORMAT_VERSION
        }
    ));
}

#[test]
fn unsupported_layout() {
    let (mut b, _) = segment(true);
    b[12..16].copy_from_slice(&0u32.to_le_bytes());
    fix_prefix_crc(&mut b);
    assert!(matches!(
        SegmentReader::from_bytes(b),
        Err(SegmentError::UnsupportedLayout { found: 0, .. })
    ));
}

#[test]
fn truncated_header() {
    let (b, _) = segment(true);
    for cut in [4, 11, 20, PREFIX_LEN, PREFIX_LEN + 5] {
        let err = SegmentReader::from_bytes(b[..cut].to_vec()).expect_err("truncated");
        match err {
            SegmentError::TruncatedHeader { available, .. } => assert_eq!(available, cut as u64),
            // Fewer bytes than the magic: still recognised as the start of a segment.
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn header_checksum_mismatch() {
    // In the header body: the prefix still says where the blocks start, so they are read.
    let (mut b, blocks) = segment(true);
    b[PREFIX_LEN + 3] ^= 0xff;
    let r = SegmentReader::from_bytes(b).expect("opens without its header body");
    assert!(r.header_damaged());
    assert!(matches!(
        r.damage()[0].error,
        SegmentError::BadChecksum {
            what: "header",
            offset: 32,
            ..
        }
    ));
    assert_eq!(r.header().capture_id, "");
    assert_eq!(r.header().format_version, FORMAT_VERSION);
    assert!(r.is_sealed());
    first_blocks_read(&r, &blocks, BLOCKS);
    let (good, _) = segment(true);
    assert!(!SegmentReader::from_bytes(good)
        .expect("opens")
        .header_damaged());
    // And in the prefix itself.
    let (mut b, _) = segment(true);
    b[17] ^= 0x01;
    assert!(matches!(
        SegmentReader::from_bytes(b),
        Err(SegmentError::BadChecksum {
            what: "header",
            offset: 0,
            ..
        })
    ));
}

#[test]
fn block_checksum_mismatch() {
    for seal in [false, true] {
        let (mut b, blocks) = segment(seal);
        let off = offsets(&b)[1] as usize;
        b[off + FRAME_HEADER_LEN + 10] ^= 0x55;
        let r = SegmentReader::from_bytes(b).expect("opens");
        assert!(
            r.damage().is_empty(),
            "payload damage is found when the block is read"
        );
        assert_eq!(r.blocks().len(), BLOCKS);
        first_blocks_read(&r, &blocks, 1);
        assert!(matches!(
            r.read_block(1),
            Err(SegmentError::BadChecksum { what: "block", offset, .. }) if offset == off as u64
        ));
        assert_eq!(r.read_block(2).expect("block after the damage"), blocks[2]);
    }
}

#[test]
fn frame_header_checksum_mismatch() {
    // Unsealed: the scan stops at the damaged frame.
    let (mut b, blocks) = segment(false);
    let off = offsets(&b)[1] as usize;
    b[off + 20] ^= 0x01; // min_ts
    let len = b.len() as u64;
    let r = SegmentReader::from_bytes(b).expect("opens");
    assert_eq!(r.blocks().len(), 1);
    first_blocks_read(&r, &blocks, 1);
    let d = &r.damage()[0];
    assert!(matches!(
        d.error,
        SegmentError::BadChecksum {
            what: "frame header",
            ..
        }
    ));
    assert_eq!((d.offset, d.bytes_lost), (off as u64, len - off as u64));

    // Sealed: the footer index lets the scan skip to the next block.
    let (mut b, blocks) = segment(true);
    let offs = offsets(&b);
    b[offs[1] as usize + 20] ^= 0x01;
    let r = SegmentReader::from_bytes(b).expect("opens");
    assert!(r.is_sealed());
    assert_eq!(r.blocks().len(), 2);
    assert_eq!(r.read_block(0).expect("block 0"), blocks[0]);
    assert_eq!(r.read_block(1).expect("block 2"), blocks[2]);
    assert_eq!(r.damage().len(), 1);
    assert_eq!(r.damage()[0].bytes_lost, offs[2] - offs[1]);
}

#[test]
fn truncated_block_torn_tail() {
    let (b, blocks) = segment(false);
    let offs = offsets(&b);
    // Cut inside the third block's payload, then inside its frame header.
    for cut in [b.len() - 7, offs[2] as usize + 10] {
        let r = SegmentReader::from_bytes(b[..cut].to_vec()).expect("opens");
        assert_eq!(r.blocks().len(), 2);
        first_blocks_read(&r, &blocks, 2);
        assert!(!r.is_sealed());
        assert_eq!(r.damage().len(), 1);
        let d = &r.damage()[0];
        assert!(
            matches!(d.error, SegmentError::TruncatedBlock { offset, .. } if offset == offs[2]),
            "{:?}",
            d.error
        );
        assert_eq!((d.offset, d.bytes_lost), (offs[2], cut as u64 - offs[2]));
    }
}

#[test]
fn truncated_block_in_a_file_on_disk() {
    let (b, blocks) = segment(false);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("torn.rseg");
    std::fs::write(&path, &b[..b.len() - 3]).expect("write");
    let r = SegmentReader::open(&path).expect("opens");
    first_blocks_read(&r, &blocks, 2);
    assert_eq!(r.damage()[0].path, path);
    assert!(matches!(
        r.damage()[0].error,
        SegmentError::TruncatedBlock { .. }
    ));
}

#[test]
fn absurd_length() {
    let (mut b, blocks) = segment(false);
    let off = offsets(&b)[1] as usize;
    b[off + 4..off + 8].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    fix_frame_crc(&mut b, off);
    let r = SegmentReader::from_bytes(b).expect("opens");
    first_blocks_read(&r, &blocks, 1);
    assert_eq!(r.blocks().len(), 1);
    assert!(matches!(
        r.damage()[0].error,
        SegmentError::AbsurdLength {
            what: "compressed block",
            len: 0xffff_fff0,
            ..
        }
    ));
    // An event count larger than the block could hold.
    let (mut b, _) = segment(false);
    let off = offsets(&b)[2] as usize;
    b[off + 12..off + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    fix_frame_crc(&mut b, off);
    let r = SegmentReader::from_bytes(b).expect("opens");
    assert_eq!(r.blocks().len(), 2);
    assert!(matches!(
        r.damage()[0].error,
        SegmentError::AbsurdLength {
            what: "event count",
            ..
        }
    ));
    // A header body length beyond the limit.
    let (mut b, _) = segment(false);
    b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    fix_prefix_crc(&mut b);
    assert!(matches!(
        SegmentReader::from_bytes(b),
        Err(SegmentError::AbsurdLength {
            what: "header body (uncompressed)",
            ..
        })
    ));
}

#[test]
fn missing_footer() {
    let (b, blocks) = segment(false);
    let r = SegmentReader::from_bytes(b).expect("opens");
    assert!(!r.is_sealed());
    assert!(matches!(r.check_sealed(), Err(SegmentError::MissingFooter)));
    assert!(
        r.damage().is_empty(),
        "an unsealed file ending on a block boundary lost nothing"
    );
    first_blocks_read(&r, &blocks, BLOCKS);
}

#[test]
fn torn_footer() {
    let (b, blocks) = segment(true);
    let r = SegmentReader::from_bytes(b.clone()).expect("opens");
    assert!(r.is_sealed());
    let footer_at = r.blocks()[BLOCKS - 1].offset + r.blocks()[BLOCKS - 1].frame_len();
    let r = SegmentReader::from_bytes(b[..b.len() - 5].to_vec()).expect("opens");
    assert!(!r.is_sealed());
    first_blocks_read(&r, &blocks, BLOCKS);
    let d = &r.damage()[0];
    assert!(
        matches!(d.error, SegmentError::TruncatedBlock { .. }),
        "{:?}",
        d.error
    );
    assert_eq!(d.offset, footer_at);
}

#[test]
fn damaged_trailer_leaves_segment_unsealed() {
    let (mut b, blocks) = segment(true);
    let n = b.len();
    b[n - 10] ^= 0x01; // inside the trailer's footer offset CRC
    let r = SegmentReader::from_bytes(b).expect("opens");
    assert!(!r.is_sealed());
    first_blocks_read(&r, &blocks, BLOCKS);
    assert!(matches!(r.damage()[0].error, SegmentError::MissingFooter));
}

#[test]
fn garbage_after_blocks() {
    let (mut b, blocks) = segment(false);
    b.extend_from_slice(&[0x42; 100]);
    let r = SegmentReader::from_bytes(b).expect("opens");
    first_blocks_read(&r, &blocks, BLOCKS);
    assert!(matches!(
        r.damage()[0].error,
        SegmentError::BadFrame {
            tag: [0x42, 0x42, 0x42, 0x42],
            ..
        }
    ));
    assert_eq!(r.damage()[0].bytes_lost, 100);
}

/// Replaces block `i`'s payload with `payload`, fixing lengths and CRCs, keeping the rest.
fn replace_payload(b: &[u8], i: usize, payload: &[u8], uncompressed: u32) -> Vec<u8> {
    let r = SegmentReader::from_bytes(b.to_vec()).expect("valid");
    let info = r.blocks()[i];
    let off = info.offset as usize;
    let end = off + info.frame_len() as usize;
    let mut out = b[..off].to_vec();
    let mut fh = b[off..off + FRAME_HEADER_LEN].to_vec();
    fh[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    fh[8..12].copy_from_slice(&uncompressed.to_le_bytes());
    fh[32..36].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    fix_frame_crc(&mut fh, 0);
    out.extend_from_slice(&fh);
    out.extend_from_slice(payload);
    out.extend_from_slice(&b[end..]);
    out
}

#[test]
fn not_zstd() {
    let (b, blocks) = segment(false);
    let b = replace_payload(&b, 1, &[7u8; 64], 1000);
    let r = SegmentReader::from_bytes(b).expect("opens");
    assert!(r.damage().is_empty());
    assert_eq!(r.read_block(0).expect("block 0"), blocks[0]);
    assert!(matches!(
        r.read_block(1),
        Err(SegmentError::Decompress { what: "block", .. })
    ));
    assert_eq!(r.read_block(2).expect("block 2"), blocks[2]);
}

#[test]
fn invalid_archive() {
    let (b, blocks) = segment(false);
    // Valid zstd of bytes that are no valid rkyv archive of a block.
    let junk: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let z = zstd::bulk::compress(&junk, 1).expect("compress");
    let b = replace_payload(&b, 1, &z, junk.len() as u32);
    let r = SegmentReader::from_bytes(b).expect("opens");
    assert_eq!(r.read_block(0).expect("block 0"), blocks[0]);
    assert!(matches!(
        r.read_block(1),
        Err(SegmentError::InvalidArchive { what: "block", .. })
    ));
    assert_eq!(r.read_block(2).expect("block 2"), blocks[2]);
}

#[test]
fn no_such_block() {
    let (b, _) = segment(true);
    let r = SegmentReader::from_bytes(b).expect("opens");
    assert!(matches!(
        r.read_block(99),
        Err(SegmentError::NoSuchBlock {
            index: 99,
            count: 3
        })
    ));
}

#[test]
fn every_truncation_and_bit_flip_is_an_error_not_a_panic() {
    let (b, _) = segment(true);
    for cut in (0..b.len()).step_by(7) {
        if let Ok(r) = SegmentReader::from_bytes(b[..cut].to_vec()) {
            for i in 0..r.blocks().len() {
                let _ = r.read_block(i);
            }
        }
    }
    for pos in (0..b.len()).step_by(3) {
        let mut c = b.clone();
        c[pos] ^= 1 << (pos % 8);
        if let Ok(r) = SegmentReader::from_bytes(c) {
            for i in 0..r.blocks().len() {
                let _ = r.read_block(i);
            }
        }
    }
}

#[test]
fn absurd_event_count_is_refused_before_any_allocation() {
    // A hostile frame may claim as many events as its (large) uncompressed length allows:
    // the reader caps events per block so that a decoded block's memory stays bounded.
    let (mut b, blocks) = segment(false);
    let off = offsets(&b)[2] as usize;
    b[off + 8..off + 12].copy_from_slice(&(64u32 << 20).to_le_bytes());
    b[off + 12..off + 16].copy_from_slice(&((1u32 << 20) + 1).to_le_bytes());
    fix_frame_crc(&mut b, off);
    let r = SegmentReader::from_bytes(b).expect("opens");
    first_blocks_read(&r, &blocks, 2);
    assert!(matches!(
        r.damage()[0].error,
        SegmentError::AbsurdLength {
            what: "event count",
            limit: 1_048_576,
            ..
        }
    ));
}
