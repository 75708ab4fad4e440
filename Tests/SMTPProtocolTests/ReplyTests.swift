import XCTest
@testable import SMTPProtocol

final class ReplyTests: XCTestCase {
    func testWireFormatMultiline() {
        let r = Reply(250, nil, ["mx.test", "PIPELINING", "DSN"])
        XCTAssertEqual(String(decoding: r.wire, as: UTF8.self), "250-mx.test\r\n250-PIPELINING\r\n250 DSN\r\n")
        let e = Reply(550, EnhancedStatus(5, 7, 1), ["one", "two"])
        XCTAssertEqual(String(decoding: e.wire, as: UTF8.self), "550-5.7.1 one\r\n550 5.7.1 two\r\n")
    }

    func testEnhancedStatusParsing() {
        XCTAssertEqual(EnhancedStatus(parsing: "5.7.1"), EnhancedStatus(5, 7, 1))
        for bad in ["3.0.0", "5.7", "5.7.1.1", "5..1", "x.7.1", "5.1000.1", ""] {
            XCTAssertNil(EnhancedStatus(parsing: bad), bad)
        }
    }

    func testReceivedHeader() {
        let id = QueueIDFixture.id
        let h = String(decoding: ReceivedHeader.format(
            heloName: "client.test", clientAddress: .v4(0x7f000001), clientName: nil, hostname: "mx.test",
            protocolWord: "ESMTP", queueID: id, recipient: .postmaster, date: 0), as: UTF8.self)
        XCTAssertEqual(h, "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (Relaygate) with ESMTP id \(id)\r\n"
                       + "\tfor <Postmaster>;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n")
        XCTAssertEqual(ReceivedHeader.rfc5322Date(1_796_334_932), "Thu, 03 Dec 2026 21:55:32 +0000")
    }

    func testXText() {
        XCTAssertEqual(XText.decode(Array("a+2Bb+3Dc".utf8)[...]), "a+b=c")
        XCTAssertNil(XText.decode(Array("a+2b".utf8)[...]))   // lowercase hex is not xtext
        XCTAssertNil(XText.decode(Array("a=b".utf8)[...]))
        XCTAssertEqual(XText.encode("a+b=c d"), "a+2Bb+3Dc+20d")
    }
}

import MailModel
enum QueueIDFixture { static let id = QueueID(micros: 1, random: 2) }
