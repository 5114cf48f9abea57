/*
 * ipkey: a peer address to the key per-client limits count it by (see
 * ipkey.h): IPv4 as is, IPv6 masked to its prefix, v4-mapped as IPv4.
 * Pure: formatting only.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "ipkey.h"

int ipkey_format(const struct sockaddr *sa, unsigned v6_prefix, char *out, size_t outlen)
{
    char text[INET6_ADDRSTRLEN];
    unsigned char b[16];
    int n;

    if (sa == NULL || outlen == 0)
        return -1;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)sa;
        if (inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text)) == NULL)
            return -1;
        n = snprintf(out, outlen, "%s", text);
        return n >= 0 && (size_t)n < outlen ? 0 : -1;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    memcpy(b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)b)) {
        /* an IPv4 client on a dual-stack socket is that IPv4 client */
        if (inet_ntop(AF_INET, b + 12, text, sizeof(text)) == NULL)
            return -1;
        n = snprintf(out, outlen, "%s", text);
        return n >= 0 && (size_t)n < outlen ? 0 : -1;
    }
    if (v6_prefix > 128)
        v6_prefix = 128;
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = v6_prefix > i * 8 ? v6_prefix - i * 8 : 0;
        if (keep < 8)
            b[i] &= (unsigned char)(0xff00u >> keep);
    }
    if (inet_ntop(AF_INET6, b, text, sizeof(text)) == NULL)
        return -1;
    if (v6_prefix == 128)
        n = snprintf(out, outlen, "%s", text);
    else
        n = snprintf(out, outlen, "%s/%u", text, v6_prefix);
    return n >= 0 && (size_t)n < outlen ? 0 : -1;
}
