/* The floor of the whole-path benchmark: the least a reader with one request in flight can
 * spend. It reads REGISTERS holding registers from 127.0.0.1:PORT, 125 registers a request,
 * with nothing but a blocking socket: one send of the 12-byte request, then blocking reads
 * until the whole answer is in (one read, nearly always), no select or poll, no decoding, no
 * checks beyond the answer's length. Prints "registers N seconds S cpu C" (C: CPU seconds this
 * process used, user and system), as modbus_client does.
 *
 * usage: socket_client PORT REGISTERS SECONDS
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "reader.h"

int main(int argc, char **argv) {
    int port, count;
    double seconds;
    if (reader_args(argc, argv, &port, &count, &seconds) < 0) {
        return 2;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (s < 0 || connect(s, (struct sockaddr *)&to, sizeof to) < 0) {
        perror("connect");
        return 1;
    }
    unsigned char answer[9 + 250];
    unsigned short transaction = 0;
    long long registers = 0;
    double start = now(), cpu_start = cpu();
    while (now() - start < seconds) {
        for (int address = 0; address < count; address += 125) {
            int n = count - address < 125 ? count - address : 125;
            transaction++;
            unsigned char request[12] = {transaction >> 8, transaction & 0xff, 0, 0, 0, 6, 1, 3,
                                         address >> 8, address & 0xff, n >> 8, n & 0xff};
            if (send(s, request, sizeof request, 0) != sizeof request) {
                perror("send");
                return 1;
            }
            int want = 9 + 2 * n, got = 0;
            while (got < want) {
                ssize_t k = recv(s, answer + got, want - got, 0);
                if (k <= 0) {
                    perror("recv");
                    return 1;
                }
                got += k;
            }
            registers += n;
        }
    }
    printf("registers %lld seconds %.3f cpu %.3f\n", registers, now() - start, cpu() - cpu_start);
    close(s);
    return 0;
}
