/*
 * fuzz_dns_answer: libFuzzer target for lib/dns_answer (a raw DNS answer
 * message from a server that may be hostile, RFC 1035 §4.1). The first
 * input byte picks the asked type (A, AAAA or MX), the rest is the message,
 * asked about "example.org". What must hold for any input aborts when it
 * does not: a verdict of 0 or -1, a reason exactly on -1, TTLs never above
 * 2^31 - 1 (RFC 2181 §8), and the same verdict on a second look.
 * No I/O and no state between inputs; replay.c drives it without libFuzzer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns_answer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int types[3] = {DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_MX};
    const char *detail = NULL, *again = NULL;
    uint32_t ans = 0, neg = 0;
    int type, rc;

    if (size < 1)
        return 0;
    type = types[data[0] % 3];
    rc = dns_answer_check(data + 1, size - 1, "example.org", type, &detail);
    CHECK(rc == 0 || rc == -1);
    CHECK((rc == -1) == (detail != NULL));
    CHECK(detail == NULL || detail[0] != '\0');
    CHECK(dns_answer_check(data + 1, size - 1, "EXAMPLE.org.", type, &again) == rc);
    dns_answer_ttls(data + 1, size - 1, type, &ans, &neg);
    CHECK(ans <= 0x7fffffffu && neg <= 0x7fffffffu);
    return 0;
}
