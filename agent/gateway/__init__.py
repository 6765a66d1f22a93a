"""libvirt's remote protocol in front of the bus: real virsh and libvirt-python manage
virtbus hosts with ``virtbus+tcp://GATEWAY/HOST``.

The rooms: ``server`` (listening, clients, limits), ``protocol`` and ``xdr`` (framing),
``procedures`` and ``auth`` (handlers by procedure), ``acl`` and ``authz`` (who may call
what), ``sasl`` (the SCRAM login), ``identity``, ``settings``.
"""
