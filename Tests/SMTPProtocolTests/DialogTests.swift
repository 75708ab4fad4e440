import Foundation
import XCTest
@testable import SMTPProtocol

/// Every dialog script, fed byte by byte, line by line and all at once (pipelined): the replies and
/// the queued bodies must be the same in all three.
final class DialogTests: XCTestCase {
    func testAllDialogs() throws {
        let dir = Bundle.module.resourceURL!.appendingPathComponent("Dialogs")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".dialog") }.sorted()
        XCTAssertGreaterThan(files.count, 10, "dialog corpus went missing")
        for file in files {
            let text = try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)
            let script = try DialogScript(name: file, text: text)
            let expected = script.expectedEvents
            for feeding in DialogScript.Feeding.allCases {
                let (events, bodies) = script.run(feeding)
                let ok = events.count == expected.count && zip(expected, events).allSatisfy { DialogScript.matches($0, $1) }
                XCTAssertTrue(ok, "\(file) [\(feeding)]\n expected: \(expected)\n   actual: \(events)")
                let wantBodies = script.expectedBodies
                if !wantBodies.isEmpty {
                    XCTAssertEqual(bodies, wantBodies, "\(file) [\(feeding)] queued bodies differ")
                }
            }
        }
    }
}
