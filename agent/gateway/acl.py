"""What each remote procedure needs: libvirt's ``@acl`` annotations.

The permissions are those ``src/remote/remote_protocol.x`` names for each procedure
(only the unconditional ones; a permission that depends on a flag is checked by the
procedure itself). The API name is the public function libvirt's errors name.

A read-only connection may call a procedure only when every permission it needs is a
reading one (``getattr``, ``read``, ``search_*``): the same set of calls libvirt's own
``virCheckReadOnlyGoto`` lets through on a ``VIR_CONNECT_RO`` connection.
"""

from __future__ import annotations

from dataclasses import dataclass

READING = frozenset({"getattr", "read"})


@dataclass(frozen=True)
class Access:
    api: str
    permissions: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        """Allowed on a read-only connection."""
        return all(reads(permission) for permission in self.permissions)


def reads(permission: str) -> bool:
    """``domain:read``, ``connect:getattr``, ``connect:search_domains``: looks, never
    changes; ``domain:read_secure`` is not among them (it reveals secrets)."""
    _, _, verb = permission.partition(":")
    return verb in READING or verb.startswith("search_")


def _a(api: str, *permissions: str) -> Access:
    return Access(api, permissions)


# keyed by procedure number: procedures other gateway modules answer are here too, and
# a procedure missing from this table is refused on every connection (fail closed)
ACCESS: dict[int, Access] = {
    1: _a("virConnectOpen"),
    2: _a("virConnectClose"),
    3: _a("virConnectGetType", "connect:getattr"),
    4: _a("virConnectGetVersion", "connect:getattr"),
    5: _a("virConnectGetMaxVcpus", "connect:read"),
    6: _a("virNodeGetInfo", "connect:read"),
    7: _a("virConnectGetCapabilities", "connect:read"),
    9: _a("virDomainCreate", "domain:start"),
    10: _a("virDomainCreateXML", "domain:write", "domain:start"),
    11: _a("virDomainDefineXML", "domain:write", "domain:save"),
    12: _a("virDomainDestroy", "domain:stop"),
    14: _a("virDomainGetXMLDesc", "domain:read"),
    15: _a("virDomainGetAutostart", "domain:read"),
    16: _a("virDomainGetInfo", "domain:read"),
    17: _a("virDomainGetMaxMemory", "domain:read"),
    18: _a("virDomainGetMaxVcpus", "domain:read"),
    19: _a("virDomainGetOSType", "domain:read"),
    21: _a("virConnectListDefinedDomains", "connect:search_domains"),
    22: _a("virDomainLookupByID", "domain:getattr"),
    23: _a("virDomainLookupByName", "domain:getattr"),
    24: _a("virDomainLookupByUUID", "domain:getattr"),
    25: _a("virConnectNumOfDefinedDomains", "connect:search_domains"),
    27: _a("virDomainReboot", "domain:init_control"),
    28: _a("virDomainResume", "domain:suspend"),
    29: _a("virDomainSetAutostart", "domain:write"),
    30: _a("virDomainSetMaxMemory", "domain:write"),
    31: _a("virDomainSetMemory", "domain:write"),
    32: _a("virDomainSetVcpus", "domain:write"),
    33: _a("virDomainShutdown", "domain:init_control"),
    34: _a("virDomainSuspend", "domain:suspend"),
    35: _a("virDomainUndefine", "domain:delete"),
    37: _a("virConnectListDomains", "connect:search_domains"),
    51: _a("virConnectNumOfDomains", "connect:search_domains"),
    52: _a("virConnectNumOfNetworks", "connect:search_networks"),
    56: _a("virDomainGetSchedulerType", "domain:read"),
    57: _a("virDomainGetSchedulerParameters", "domain:read"),
    58: _a("virDomainSetSchedulerParameters", "domain:write"),
    59: _a("virConnectGetHostname", "connect:getattr"),
    60: _a("virConnectSupportsFeature", "connect:getattr"),
    66: _a("virConnectAuthList"),
    67: _a("virConnectAuthSaslInit"),
    68: _a("virConnectAuthSaslStart"),
    69: _a("virConnectAuthSaslStep"),
    70: _a("virConnectAuthPolkit"),
    71: _a("virConnectNumOfStoragePools", "connect:search_storage_pools"),
    72: _a("virConnectListStoragePools", "connect:search_storage_pools"),
    73: _a("virConnectNumOfDefinedStoragePools", "connect:search_storage_pools"),
    74: _a("virConnectListDefinedStoragePools", "connect:search_storage_pools"),
    77: _a("virStoragePoolDefineXML", "storage_pool:write", "storage_pool:save"),
    78: _a("virStoragePoolCreate", "storage_pool:start"),
    83: _a("virStoragePoolRefresh", "storage_pool:refresh"),
    84: _a("virStoragePoolLookupByName", "storage_pool:getattr"),
    85: _a("virStoragePoolLookupByUUID", "storage_pool:getattr"),
    86: _a("virStoragePoolLookupByVolume", "storage_pool:getattr"),
    87: _a("virStoragePoolGetInfo", "storage_pool:read"),
    88: _a("virStoragePoolGetXMLDesc", "storage_pool:read"),
    89: _a("virStoragePoolGetAutostart", "storage_pool:read"),
    90: _a("virStoragePoolSetAutostart", "storage_pool:write"),
    91: _a("virStoragePoolNumOfVolumes", "storage_pool:search_storage_vols"),
    92: _a("virStoragePoolListVolumes", "storage_pool:search_storage_vols"),
    93: _a("virStorageVolCreateXML", "storage_vol:create"),
    94: _a("virStorageVolDelete", "storage_vol:delete"),
    95: _a("virStorageVolLookupByName", "storage_vol:getattr"),
    96: _a("virStorageVolLookupByKey", "storage_vol:getattr"),
    97: _a("virStorageVolLookupByPath", "storage_vol:getattr"),
    98: _a("virStorageVolGetInfo", "storage_vol:read"),
    99: _a("virStorageVolGetXMLDesc", "storage_vol:read"),
    100: _a("virStorageVolGetPath", "storage_vol:read"),
    111: _a("virNodeNumOfDevices", "connect:search_node_devices"),
    122: _a("virNodeGetSecurityModel", "connect:read"),
    149: _a("virConnectIsSecure"),
    150: _a("virDomainIsActive", "domain:read"),
    151: _a("virDomainIsPersistent", "domain:read"),
    154: _a("virStoragePoolIsActive", "storage_pool:read"),
    155: _a("virStoragePoolIsPersistent", "storage_pool:read"),
    157: _a("virConnectGetLibVersion", "connect:getattr"),
    183: _a("virDomainHasManagedSaveImage", "domain:read"),
    185: _a("virDomainSnapshotCreateXML", "domain:snapshot"),
    186: _a("virDomainSnapshotGetXMLDesc", "domain:read"),
    187: _a("virDomainSnapshotNum", "domain:read"),
    188: _a("virDomainSnapshotListNames", "domain:read"),
    189: _a("virDomainSnapshotLookupByName", "domain:read"),
    190: _a("virDomainHasCurrentSnapshot", "domain:read"),
    191: _a("virDomainSnapshotCurrent", "domain:read"),
    192: _a("virDomainRevertToSnapshot", "domain:snapshot"),
    193: _a("virDomainSnapshotDelete", "domain:snapshot"),
    196: _a("virDomainCreateWithFlags", "domain:start"),
    197: _a("virDomainSetMemoryParameters", "domain:write"),
    198: _a("virDomainGetMemoryParameters", "domain:read"),
    199: _a("virDomainSetVcpusFlags", "domain:write"),
    200: _a("virDomainGetVcpusFlags", "domain:read"),
    201: _a("virDomainOpenConsole", "domain:open_device"),
    204: _a("virDomainSetMemoryFlags", "domain:write"),
    212: _a("virDomainGetState", "domain:read"),
    219: _a("virDomainSetSchedulerParametersFlags", "domain:write"),
    223: _a("virDomainGetSchedulerParametersFlags", "domain:read"),
    231: _a("virDomainUndefineFlags", "domain:delete"),
    234: _a("virDomainDestroyFlags", "domain:stop"),
    244: _a("virDomainSnapshotGetParent", "domain:read"),
    246: _a("virDomainSnapshotNumChildren", "domain:read"),
    247: _a("virDomainSnapshotListChildrenNames", "domain:read"),
    258: _a("virDomainShutdownFlags", "domain:init_control"),
    264: _a("virDomainSetMetadata", "domain:write"),
    265: _a("virDomainGetMetadata", "domain:read"),
    273: _a("virConnectListAllDomains", "connect:search_domains"),
    271: _a("virDomainSnapshotIsCurrent", "domain:read"),
    272: _a("virDomainSnapshotHasMetadata", "domain:read"),
    274: _a("virDomainListAllSnapshots", "domain:read"),
    275: _a("virDomainSnapshotListAllChildren", "domain:read"),
    281: _a("virConnectListAllStoragePools", "connect:search_storage_pools"),
    282: _a("virStoragePoolListAllVolumes", "storage_pool:search_storage_vols"),
    283: _a("virConnectListAllNetworks", "connect:search_networks"),
    313: _a("virConnectNetworkEventRegisterAny", "connect:search_networks"),
    314: _a("virConnectNetworkEventDeregisterAny", "connect:read"),
    316: _a("virConnectDomainEventRegisterAny", "connect:search_domains"),
    317: _a("virConnectDomainEventDeregisterAny", "connect:read"),
    342: _a("virConnectGetDomainCapabilities", "connect:write"),
    344: _a("virConnectGetAllDomainStats", "connect:search_domains"),
    350: _a("virDomainDefineXMLFlags", "domain:write", "domain:save"),
    358: _a("virDomainRename", "domain:write", "domain:save"),
    360: _a("virConnectRegisterCloseCallback", "connect:read"),
    361: _a("virConnectUnregisterCloseCallback", "connect:read"),
    368: _a("virConnectStoragePoolEventRegisterAny", "connect:search_storage_pools"),
    369: _a("virConnectStoragePoolEventDeregisterAny", "connect:read"),
    374: _a("virConnectNodeDeviceEventRegisterAny", "connect:search_node_devices"),
    375: _a("virConnectNodeDeviceEventDeregisterAny", "connect:read"),
    426: _a("virDomainGetMessages", "domain:read"),
    20: _a("virDomainGetVcpus", "domain:read"),
    64: _a("virDomainBlockStats", "domain:read"),
    65: _a("virDomainInterfaceStats", "domain:read"),
    102: _a("virNodeGetFreeMemory", "connect:read"),
    159: _a("virDomainMemoryStats", "domain:read"),
    203: _a("virConnectGetSysinfo", "connect:read"),
    227: _a("virNodeGetCPUStats", "connect:read"),
    228: _a("virNodeGetMemoryStats", "connect:read"),
    243: _a("virDomainBlockStatsFlags", "domain:read"),
    262: _a("virDomainGetCPUStats", "domain:read"),
    293: _a("virNodeGetCPUMap", "connect:read"),
    8: _a("virDomainAttachDevice", "domain:write"),
    13: _a("virDomainDetachDevice", "domain:write"),
    36: _a("virConnectListDefinedNetworks", "connect:search_networks"),
    38: _a("virConnectListNetworks", "connect:search_networks"),
    39: _a("virNetworkCreate", "network:start"),
    41: _a("virNetworkDefineXML", "network:write", "network:save"),
    42: _a("virNetworkDestroy", "network:stop"),
    43: _a("virNetworkGetXMLDesc", "network:read"),
    44: _a("virNetworkGetAutostart", "network:read"),
    45: _a("virNetworkGetBridgeName", "network:read"),
    46: _a("virNetworkLookupByName", "network:getattr"),
    47: _a("virNetworkLookupByUUID", "network:getattr"),
    48: _a("virNetworkSetAutostart", "network:write"),
    49: _a("virNetworkUndefine", "network:delete"),
    50: _a("virConnectNumOfDefinedNetworks", "connect:search_networks"),
    152: _a("virNetworkIsActive", "network:read"),
    153: _a("virNetworkIsPersistent", "network:read"),
    160: _a("virDomainAttachDeviceFlags", "domain:write"),
    161: _a("virDomainDetachDeviceFlags", "domain:write"),
    341: _a("virNetworkGetDHCPLeases", "network:read"),
    353: _a("virDomainInterfaceAddresses", "domain:read"),
}

# libvirtd answers these before a client has authenticated: the procedures its daemon
# clears ``needAuth`` of (AUTH_LIST, AUTH_SASL_INIT/START/STEP, AUTH_POLKIT); keepalive
# is another program, never refused
BEFORE_AUTH = frozenset({66, 67, 68, 69, 70})


def access(procedure: int) -> Access | None:
    return ACCESS.get(procedure)
