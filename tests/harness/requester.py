#!/usr/bin/python3
"""Third-party Jingle Nodes (XEP-0278) requester for jnrelay's end-to-end tests.

Logs in, sends --count channel requests (IQ get) to --relay one after the
other (or --raw payloads, such as XEP-0215 <services/>), optionally waits for --wait-events channel event IQ sets (answering
each with a result), then disconnects. Every outcome is ONE JSON line on
stdout (see requester.go); slixmpp's own logging goes to stderr.
Run with /usr/bin/python3 (python3-slixmpp).
"""
import argparse
import asyncio
import json
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET, tostring
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

JN = 'http://jabber.org/protocol/jinglenodes'
CHANNEL = JN + '#channel'
EVENT = JN + '#event'
EXTDISCO = 'urn:xmpp:extdisco:2'



STANZAS_NS = 'urn:ietf:params:xml:ns:xmpp-stanzas'


def error_condition(err):
    """The defined condition of an error, read from the XML: slixmpp 1.8
    only knows RFC 3920's list and reports '' for newer ones such as
    policy-violation (RFC 6120)."""
    for child in err.xml:
        if child.tag.startswith('{%s}' % STANZAS_NS) and not child.tag.endswith('}text'):
            return child.tag.split('}', 1)[1]
    return err['condition']


def emit(**obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + '\n')
    sys.stdout.flush()


def local_name(tag):
    return tag.rpartition('}')[2]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--jid', required=True)
    p.add_argument('--password', required=True)
    p.add_argument('--host', required=True)
    p.add_argument('--port', type=int, required=True)
    p.add_argument('--relay', required=True)
    p.add_argument('--protocol', default='udp', choices=['udp', 'tcp', 'none'])
    p.add_argument('--set', action='store_true', help='send the IQ as a set (default get)')
    p.add_argument('--legacy', action='store_true', help='send <candidate/> instead of <channel/>')
    p.add_argument('--raw', help='raw payload element to send instead of a channel request (- reads it from standard input)')
    p.add_argument('--count', type=int, default=1)
    p.add_argument('--iq-timeout', type=float, default=10)
    p.add_argument('--wait-events', type=int, default=0)
    p.add_argument('--timeout', type=float, default=10, help='how long to wait for events')
    return p.parse_args()


def request_payload(args):
    if args.raw == '-':
        args.raw = sys.stdin.read()
    if args.raw:
        return ET.fromstring(args.raw)
    el = ET.Element('{%s}%s' % (CHANNEL, 'candidate' if args.legacy else 'channel'))
    if args.protocol != 'none':
        el.set('protocol', args.protocol)
    return el


def main():
    args = parse_args()
    xmpp = slixmpp.ClientXMPP(args.jid, args.password)
    state = {'events': 0, 'failed': False}
    all_events = asyncio.Event()

    def on_event(iq):
        if iq['type'] != 'set':
            return
        el = iq.xml.find('{%s}channel' % EVENT)
        emit(type='event', attrs=dict(el.attrib), **{'from': str(iq['from'])})
        iq.reply().send()
        state['events'] += 1
        if state['events'] >= args.wait_events:
            all_events.set()

    def fatal(text):
        state['failed'] = True
        emit(type='fatal', text=text)
        xmpp.disconnect()

    async def run(_):
        emit(type='online', jid=str(xmpp.boundjid))
        for _i in range(args.count):
            iq = xmpp.make_iq_set(ito=args.relay) if args.set else xmpp.make_iq_get(ito=args.relay)
            iq.append(request_payload(args))
            try:
                res = await iq.send(timeout=args.iq_timeout)
            except IqError as e:
                err = e.iq['error']
                out = dict(condition=error_condition(err), text=err['text'], error_type=err['type'],
                           children=[local_name(c.tag) for c in e.iq.xml])
                # A refused channel request's error echoes the request.
                ch = next((c for c in e.iq.xml if c.tag.startswith('{%s}' % CHANNEL)), None)
                if ch is not None:
                    out.update(element=local_name(ch.tag), channel=dict(ch.attrib))
                emit(type='error', **out)
                continue
            except IqTimeout:
                emit(type='timeout', phase='iq')
                continue
            children = list(res.xml)
            ch = next((c for c in children if c.tag.startswith('{%s}' % CHANNEL)), None)
            if ch is not None:
                emit(type='result', element=local_name(ch.tag), channel=dict(ch.attrib))
            else:
                out = dict(payload=''.join(tostring(c) for c in children))
                # XEP-0215: every <service/>'s attributes (host, port,
                # transport, username, password...), read from the XML.
                ext = next((c for c in children if c.tag in ('{%s}services' % EXTDISCO, '{%s}credentials' % EXTDISCO)), None)
                if ext is not None:
                    out['services'] = [dict(s.attrib) for s in ext if s.tag == '{%s}service' % EXTDISCO]
                emit(type='result', **out)
        if args.wait_events > 0 and state['events'] < args.wait_events:
            try:
                await asyncio.wait_for(all_events.wait(), args.timeout)
            except asyncio.TimeoutError:
                emit(type='timeout', phase='events', events=state['events'])
        emit(type='done')
        xmpp.disconnect()

    async def no_dns(domain, port=None):
        # Connect to --host/--port only; never query the host's DNS server
        # (slixmpp would resolve the JID domain with aiodns otherwise).
        return [(args.host, args.host, args.port)]

    xmpp.get_dns_records = no_dns
    xmpp.register_handler(Callback('jn-event', MatchXPath('{jabber:client}iq/{%s}channel' % EVENT), on_event))
    xmpp.add_event_handler('session_start', run)
    xmpp.add_event_handler('failed_auth', lambda _: fatal('authentication failed'))
    xmpp.add_event_handler('connection_failed', lambda e: fatal('connection failed: %s' % e))
    # Safety net; the Go side also bounds the run with its context.
    limit = 15 + args.count * args.iq_timeout + (args.timeout if args.wait_events else 0)
    xmpp.loop.call_later(limit, lambda: fatal('overall time limit %.0fs exceeded' % limit))
    xmpp.connect((args.host, args.port), force_starttls=False, disable_starttls=True)
    xmpp.loop.run_until_complete(xmpp.disconnected)
    sys.exit(1 if state['failed'] else 0)


if __name__ == '__main__':
    main()
