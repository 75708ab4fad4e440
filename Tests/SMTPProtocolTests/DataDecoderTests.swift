import XCTest
@testable import SMTPProtocol

final class DataDecoderTests: XCTestCase {
    func decode(_ s: [UInt8], normalize: Bool = false, maxSize: Int = 1 << 20) -> (DataDecoder, consumed: Int, finished: Bool) {
        var d = DataDecoder(maxSize: maxSize, normalizeBareLF: normalize)
        let (c, f) = d.feed(s[...])
        return (d, c, f)
    }

    func testEndsOnlyAtCRLFDotCRLFAndLeavesTheRest() {
        let input = Array("a\r\n.\r\nNOOP\r\n".utf8)
        let (d, consumed, finished) = decode(input)
        XCTAssertTrue(finished)
        XCTAssertEqual(consumed, 6)
        XCTAssertEqual(d.body, Array("a\r\n".utf8))
        XCTAssertNil(d.problem)
    }

    func testEveryNearMissIsPoisonNotAnEnd() {
        for seq in ["\n.\n", "\r\n.\r", "\n.\r\n", "\r.\r\n", "\r\n.\n"] {
            for normalize in [false, true] {
                let input = Array("x\(seq)y".utf8)
                let (d, _, finished) = decode(input, normalize: normalize)
                XCTAssertFalse(finished, "\(seq.debugDescription) ended DATA (normalize \(normalize))")
                XCTAssertEqual(d.problem, .bareNewline, "\(seq.debugDescription) (normalize \(normalize))")
            }
        }
    }

    /// Property: for random input over a small alphabet, the decoder ends only right after the five
    /// octets CR LF . CR LF (with the line before ending in CRLF), and what it keeps has no bare CR or LF.
    func testRandomInputsNeverEndEarlyOrKeepBareNewlines() {
        var rng = SplitMix(seed: 0x5eed)
        let alphabet: [UInt8] = [13, 10, UInt8(ascii: "."), UInt8(ascii: "a"), 0]
        for round in 0..<20_000 {
            let length = Int(rng.next() % 24)
            var input: [UInt8] = []
            for _ in 0..<length { input.append(alphabet[Int(rng.next() % UInt64(alphabet.count))]) }
            for normalize in [false, true] {
                let (d, consumed, finished) = decode(input, normalize: normalize)
                // Oracle: DATA ends exactly after the first literal CR LF . CR LF, counting the CRLF that
                // ended the DATA command; never anywhere else.
                let stream = [UInt8]([13, 10]) + input
                let first = Self.firstIndex(of: [13, 10, 46, 13, 10], in: stream)
                XCTAssertEqual(finished, first != nil, "round \(round) normalize \(normalize): \(input)")
                if let first, finished {
                    XCTAssertEqual(consumed, first + 5 - 2, "round \(round): ended at the wrong place: \(input)")
                }
                if d.problem == nil {
                    XCTAssertFalse(Self.hasBareNewline(d.body), "round \(round): kept a bare CR or LF: \(input)")
                }
            }
        }
    }

    func testSizeLimitPoisonsAndReleasesMemory() {
        let input = Array((String(repeating: "0123456789", count: 10) + "\r\n.\r\n").utf8)
        let (d, _, finished) = decode(input, maxSize: 50)
        XCTAssertTrue(finished)
        XCTAssertEqual(d.problem, .tooBig)
        XCTAssertTrue(d.body.isEmpty)
        XCTAssertEqual(d.size, 102)
    }

    func testFeedingInPiecesMatchesFeedingWhole() {
        let input = Array("Subject: x\r\n\r\n..dot\r\nline\r\n.\r\n".utf8)
        let (whole, _, _) = decode(input)
        var d = DataDecoder(maxSize: 1 << 20)
        var finished = false
        for b in input where !finished { finished = d.feed([b][...]).finished }
        XCTAssertTrue(finished)
        XCTAssertEqual(d.body, whole.body)
        XCTAssertEqual(d.body, Array("Subject: x\r\n\r\n.dot\r\nline\r\n".utf8))
    }

    static func hasBareNewline(_ b: [UInt8]) -> Bool {
        for (i, x) in b.enumerated() {
            if x == 13 && (i + 1 >= b.count || b[i + 1] != 10) { return true }
            if x == 10 && (i == 0 || b[i - 1] != 13) { return true }
        }
        return false
    }

    static func firstIndex(of needle: [UInt8], in hay: [UInt8]) -> Int? {
        guard hay.count >= needle.count else { return nil }
        for i in 0...(hay.count - needle.count) where Array(hay[i..<(i + needle.count)]) == needle { return i }
        return nil
    }
}

/// A small deterministic generator, so every run tests the same inputs.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}
