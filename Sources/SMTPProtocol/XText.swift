/// RFC 3461 4 xtext: printable ASCII except `+` and `=`, with `+HH` (uppercase hex) for anything else.
public enum XText {
    public static func decode(_ bytes: ArraySlice<UInt8>) -> String? {
        var out: [UInt8] = []
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let b = bytes[i]
            if b == UInt8(ascii: "+") {
                guard bytes.distance(from: i, to: bytes.endIndex) >= 3,
                      let hi = hex(bytes[i + 1]), let lo = hex(bytes[i + 2]) else { return nil }
                out.append(hi << 4 | lo)
                i += 3
            } else {
                // RFC 6533 lets utf-8 ORCPT values carry raw UTF-8; accept it as well.
                guard (b >= 33 && b <= 126 && b != UInt8(ascii: "=")) || b >= 0x80 else { return nil }
                out.append(b)
                i += 1
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    public static func encode(_ text: String) -> String {
        var out = ""
        for b in text.utf8 {
            if b >= 33 && b <= 126 && b != UInt8(ascii: "+") && b != UInt8(ascii: "=") {
                out.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                let h = Array("0123456789ABCDEF".utf8)
                out += "+" + String(decoding: [h[Int(b >> 4)], h[Int(b & 15)]], as: UTF8.self)
            }
        }
        return out
    }

    static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10   // RFC 3461: uppercase only
        default: return nil
        }
    }
}
