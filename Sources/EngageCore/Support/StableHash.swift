/// FNV-1a, 64 bits: a stable hash of text (Swift's `hashValue` changes between runs).
public enum StableHash {
    public static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// 16 hex digits.
    public static func hex(_ text: String) -> String {
        let s = String(fnv1a(text), radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
