//! Key material is wiped when its holder is dropped: each key-holding type is built in a
//! buffer of its own, dropped in place, and the buffer searched for key bytes.

use login_etl_core::crypto::{BlindIndexer, DataKey, ErasureKey, KeyMaterial, PiiField};

const KEY: [u8; 32] = [
    0x3c, 0x91, 0x5e, 0xa7, 0x12, 0xd4, 0x6b, 0xf0, 0x88, 0x2a, 0xc5, 0x7e, 0x19, 0xb3, 0x4d, 0xe6, 0x71,
    0x0f, 0xa2, 0x5c, 0xd8, 0x33, 0x9e, 0x47, 0xbb, 0x60, 0x15, 0xfa, 0x2e, 0x84, 0xc9, 0x57,
];

/// The bytes `value` leaves in its own memory once dropped in place.
fn left_after_drop<T>(value: T) -> Vec<u8> {
    let mut slot = std::mem::MaybeUninit::new(value);
    // SAFETY (unsafe in a test only, to inspect memory after a destructor ran): the slot
    // holds an initialized T, dropped exactly once here and never used as a T again; the
    // read covers the slot's own size_of::<T>() bytes, which stay allocated until `slot`
    // goes out of scope at the end of this function.
    #[allow(unsafe_code)]
    unsafe {
        std::ptr::drop_in_place(slot.as_mut_ptr());
        std::slice::from_raw_parts(slot.as_ptr().cast::<u8>(), std::mem::size_of::<T>()).to_vec()
    }
}

/// Any run of 4 key bytes (in order) in `memory`: a schedule or a copy of the key.
fn key_runs(memory: &[u8]) -> usize {
    KEY.windows(4).filter(|run| memory.windows(4).any(|w| w == *run)).count()
}

#[test]
fn key_material_is_wiped_on_drop() {
    let memory = left_after_drop(KeyMaterial::from_bytes(KEY));
    assert_eq!(key_runs(&memory), 0);
    assert!(memory.iter().all(|b| *b == 0), "{memory:?}");
}

#[test]
fn the_data_key_schedule_is_wiped_on_drop() {
    let key = DataKey::new(7, &KeyMaterial::from_bytes(KEY));
    // Use it, so every lazily built part exists.
    let index = BlindIndexer::new(&KeyMaterial::from_bytes([1; 32]), &KeyMaterial::from_bytes([2; 32]))
        .index(PiiField::Ip, "10.0.0.1");
    key.seal(PiiField::Ip, &index, "10.0.0.1").expect("seal");
    let size = std::mem::size_of::<DataKey>();
    let memory = left_after_drop(key);
    assert_eq!(key_runs(&memory), 0, "raw key bytes remain");
    // Only the version (an i32) may remain; the AES-256 key schedule is 240 bytes.
    let non_zero = memory.iter().filter(|b| **b != 0).count();
    assert!(non_zero <= 4, "{non_zero} of {size} bytes non-zero after drop");
}

#[test]
fn the_blind_index_keys_are_wiped_on_drop() {
    let indexer = BlindIndexer::new(&KeyMaterial::from_bytes(KEY), &KeyMaterial::from_bytes(KEY));
    indexer.index(PiiField::DeviceId, "123-45-6789");
    let size = std::mem::size_of::<BlindIndexer>();
    let memory = left_after_drop(indexer);
    assert_eq!(key_runs(&memory), 0, "raw key bytes remain");
    let non_zero = memory.iter().filter(|b| **b != 0).count();
    assert_eq!(non_zero, 0, "{non_zero} of {size} bytes non-zero after drop");
}

#[test]
fn the_erasure_key_is_wiped_on_drop() {
    let key = ErasureKey::new(&KeyMaterial::from_bytes(KEY));
    let mask = BlindIndexer::new(&KeyMaterial::from_bytes([1; 32]), &KeyMaterial::from_bytes([2; 32]))
        .index(PiiField::Ip, "10.0.0.1");
    key.marker(PiiField::Ip, &mask);
    let size = std::mem::size_of::<ErasureKey>();
    let memory = left_after_drop(key);
    assert_eq!(key_runs(&memory), 0, "raw key bytes remain");
    let non_zero = memory.iter().filter(|b| **b != 0).count();
    assert_eq!(non_zero, 0, "{non_zero} of {size} bytes non-zero after drop");
}
