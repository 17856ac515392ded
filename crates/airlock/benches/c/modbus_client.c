/* The baseline of the whole-path benchmark: libmodbus's own client reading REGISTERS holding
 * registers from 127.0.0.1:PORT, 125 registers a request, one request in flight, again and
 * again for SECONDS, into a buffer. Prints "registers N seconds S cpu C" (C: CPU seconds this
 * process used, user and system).
 *
 * usage: modbus_client PORT REGISTERS SECONDS
 */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>

#include "reader.h"

int main(int argc, char **argv) {
    int port, count;
    double seconds;
    if (reader_args(argc, argv, &port, &count, &seconds) < 0) {
        return 2;
    }
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", port);
    if (ctx == NULL || modbus_connect(ctx) < 0) {
        fprintf(stderr, "connect: %s\n", modbus_strerror(errno));
        return 1;
    }
    uint16_t buffer[125];
    long long registers = 0;
    double start = now(), cpu_start = cpu();
    while (now() - start < seconds) {
        for (int address = 0; address < count; address += 125) {
            int n = count - address < 125 ? count - address : 125;
            if (modbus_read_registers(ctx, address, n, buffer) != n) {
                fprintf(stderr, "read: %s\n", modbus_strerror(errno));
                return 1;
            }
            registers += n;
        }
    }
    printf("registers %lld seconds %.3f cpu %.3f\n", registers, now() - start, cpu() - cpu_start);
    modbus_free(ctx);
    return 0;
}
