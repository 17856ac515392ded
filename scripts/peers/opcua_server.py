#!/usr/bin/env python3
"""An OPC UA server for tests: asyncua (PyPI; we did not write it) serving one variable of every
scalar type plus an array, on loopback, and logging every service request it receives.

Usage: opcua_server.py PORT DIR [--security none|sign|sign_and_encrypt] [--user NAME:PASSWORD]
                         [--user-cert FILE.der] [--nodes N]
- --user: only that user name and password may open a session (no anonymous sessions).
- --user-cert: only a session with that X.509 user certificate (DER) may open (no anonymous).
- DIR holds the server's certificate (server_cert.der, made once, kept across restarts) and
  requests.log: one line per service request, the request's type name (ReadRequest,
  WriteRequest, CallRequest, ...), so a test can prove which services a client used.
- Variables live in namespace "urn:airlock:test" (index 2) under Objects/Plant:
  ns=2;s=Plant.<Type> for Boolean, SByte, Byte, Int16, UInt16, Int32, UInt32, Int64, UInt64,
  Float, Double, String, DateTime; ns=2;s=Plant.Waveform (Float[64]); ns=2;s=Plant.Counter
  (UInt32, +1 every 50 ms, source timestamp = the change); ns=2;s=Plant.Steps (Double, every
  50 ms: n + 100 * (n // 10), so +1 nine times, then +101); ns=2;s=Plant.Uncertain (Double 7.5
  with status UncertainLastUsableValue and source time 2026-11-28T12:00:00Z); with --nodes N,
  also ns=2;s=Load.<i> (Double, all changing every 100 ms) for load tests.
Prints {"ready": true, "thumbprint": SHA-1 of its certificate, hex} when it listens. Runs until killed.
"""
import asyncio
import datetime
import json
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.server import uaprocessor
from asyncua.server.user_managers import UserManager
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

port, folder = int(sys.argv[1]), Path(sys.argv[2])
args = sys.argv[3:]
security = args[args.index("--security") + 1] if "--security" in args else "none"
load_nodes = int(args[args.index("--nodes") + 1]) if "--nodes" in args else 0
user = args[args.index("--user") + 1].split(":", 1) if "--user" in args else None
user_cert = Path(args[args.index("--user-cert") + 1]).read_bytes() if "--user-cert" in args else None
folder.mkdir(parents=True, exist_ok=True)
log = open(folder / "requests.log", "a", buffering=1)

original = uaprocessor.UaProcessor._process_message


async def logged(self, typeid, requesthdr, seqhdr, body):
    name = ua.ObjectIdNames.get(typeid.Identifier, str(typeid.Identifier)).replace("_Encoding_DefaultBinary", "")
    log.write(name + "\n")
    return await original(self, typeid, requesthdr, seqhdr, body)


uaprocessor.UaProcessor._process_message = logged

SCALARS = [
    ("Boolean", ua.VariantType.Boolean, True),
    ("SByte", ua.VariantType.SByte, -8),
    ("Byte", ua.VariantType.Byte, 200),
    ("Int16", ua.VariantType.Int16, -300),
    ("UInt16", ua.VariantType.UInt16, 60000),
    ("Int32", ua.VariantType.Int32, -70000),
    ("UInt32", ua.VariantType.UInt32, 4000000000),
    ("Int64", ua.VariantType.Int64, -5000000000),
    ("UInt64", ua.VariantType.UInt64, 10000000000),
    ("Float", ua.VariantType.Float, 1.5),
    ("Double", ua.VariantType.Double, -2.25),
    ("String", ua.VariantType.String, "auto"),
    ("DateTime", ua.VariantType.DateTime, datetime.datetime(2026, 11, 28, 12, 0, 0, tzinfo=datetime.timezone.utc)),
]


class OneUser(UserManager):
    def get_user(self, iserver, username=None, password=None, certificate=None):
        if user and [username, password] == user:
            return User(role=UserRole.User)
        if user_cert and certificate is not None:
            der = certificate if isinstance(certificate, bytes) else certificate.public_bytes(serialization.Encoding.DER)
            if der == user_cert:
                return User(role=UserRole.User)
        return None


async def main():
    server = Server(user_manager=OneUser()) if user or user_cert else Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_server_name("asyncua test plant")
    await server.set_application_uri("urn:airlock:test:server")
    cert, key = folder / "server_cert.der", folder / "server_key.pem"
    if not cert.exists():
        await setup_self_signed_certificate(
            key, cert, "urn:airlock:test:server", "127.0.0.1",
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            {"countryName": "DE", "organizationName": "airlock tests", "commonName": "asyncua test plant"},
        )
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    if security == "sign_and_encrypt":
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    elif security == "sign":
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_Sign])
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    if user:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    if user_cert:
        server.set_identity_tokens([ua.X509IdentityToken])
    ns = await server.register_namespace("urn:airlock:test")
    plant = await server.nodes.objects.add_object(ua.NodeId("Plant", ns), "Plant")
    for name, vtype, value in SCALARS:
        await plant.add_variable(ua.NodeId(f"Plant.{name}", ns), name, ua.Variant(value, vtype))
    # As long as a waveform tag may be (4096 samples): past async-opcua's default array bound of 1000.
    wave = [float(i % 8) - 3.5 for i in range(4096)]
    waveform = await plant.add_variable(ua.NodeId("Plant.Waveform", ns), "Waveform", ua.Variant(wave, ua.VariantType.Float))
    await waveform.write_value_rank(1)
    await waveform.write_array_dimensions([4096])
    counter = await plant.add_variable(ua.NodeId("Plant.Counter", ns), "Counter", ua.Variant(0, ua.VariantType.UInt32))
    steps = await plant.add_variable(ua.NodeId("Plant.Steps", ns), "Steps", ua.Variant(0.0, ua.VariantType.Double))
    uncertain = await plant.add_variable(ua.NodeId("Plant.Uncertain", ns), "Uncertain", ua.Variant(0.0, ua.VariantType.Double))
    when = datetime.datetime(2026, 11, 28, 12, 0, 0, tzinfo=datetime.timezone.utc)
    await uncertain.write_value(ua.DataValue(ua.Variant(7.5, ua.VariantType.Double),
                                             ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue), SourceTimestamp=when))
    load = []
    if load_nodes:
        folder_node = await server.nodes.objects.add_object(ua.NodeId("Load", ns), "Load")
        for i in range(load_nodes):
            load.append(await folder_node.add_variable(ua.NodeId(f"Load.{i}", ns), f"L{i}", ua.Variant(0.0, ua.VariantType.Double)))
    async with server:
        der = cert.read_bytes()
        thumbprint = x509.load_der_x509_certificate(der).fingerprint(hashes.SHA1()).hex()
        print(json.dumps({"ready": True, "thumbprint": thumbprint}), flush=True)
        n, tick = 0, 0
        while True:
            await asyncio.sleep(0.05)
            n += 1
            await counter.write_value(ua.DataValue(ua.Variant(n, ua.VariantType.UInt32), SourceTimestamp=datetime.datetime.now(datetime.timezone.utc)))
            await steps.write_value(float(n + 100 * (n // 10)))
            if load and n % 2 == 0:
                tick += 1
                for i, node in enumerate(load):
                    await node.write_value(float(tick + i))


asyncio.run(main())
