import Foundation
import Testing
import VeroClient

@Suite("Response classification (docs/architecture.md#how-syncs-behave)")
struct ClassificationTests {
    @Test("statuses", arguments: [
        (200, Classification.success), (201, .success), (204, .success),
        (408, .retryable), (429, .retryable), (500, .retryable), (502, .retryable), (503, .retryable), (504, .retryable),
        (401, .credentials), (403, .credentials),
        (400, .permanent), (404, .permanent), (409, .permanent), (422, .permanent), (501, .permanent), (301, .permanent),
    ])
    func status(code: Int, expected: Classification) {
        #expect(Classification.classify(status: code) == expected)
    }

    @Test("no response at all (network error, timeout) is retryable")
    func network() {
        #expect(Classification.classify(status: nil) == .retryable)
    }

    @Test("Retry-After: seconds or an HTTP date")
    func retryAfter() {
        #expect(parseRetryAfter("3") == 3)
        #expect(parseRetryAfter(nil) == nil)
        #expect(parseRetryAfter("soon") == nil)
        let now = Date(timeIntervalSince1970: 1_445_412_480) // Wed, 21 Oct 2015 07:28:00 GMT
        #expect(parseRetryAfter("Wed, 21 Oct 2015 07:28:30 GMT", now: now) == 30)
    }
}
