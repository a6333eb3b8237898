//! Journal entry decoding (the replication wire format) never panics, and a decoded
//! entry survives an encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use studio_node::storage::JournalEntry;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = JournalEntry::decode(data) {
        let again = JournalEntry::decode(&entry.encode()).expect("re-decoding an encoded entry");
        assert_eq!(entry, again);
        let _ = entry.required_blob();
    }
});
