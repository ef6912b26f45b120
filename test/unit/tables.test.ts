import t from 'tap'
import { Op, Status, opName, statusName } from '../../protocol/local.js'
import { MsgType, typeName } from '../../protocol/wire.js'
import { namer } from '../../protocol/tables.js'

t.test('numbered tables name their numbers, and say which table a stranger is from', async (t) => {
  t.equal(opName(Op.GET), 'GET')
  t.equal(opName(Op.TICKET_WINDOW), 'TICKET_WINDOW')
  t.equal(opName(0x7f), 'op(127)')
  t.equal(statusName(Status.OK), 'OK')
  t.equal(statusName(Status.BAD_TTL), 'BAD_TTL')
  t.equal(statusName(200), 'status(200)')
  t.equal(typeName(MsgType.REPLICATE), 'REPLICATE')
  t.equal(typeName(0), 'type(0)')
  for (const [table, name] of [
    [Op, opName],
    [Status, statusName],
    [MsgType, typeName],
  ] as const) {
    for (const [k, v] of Object.entries(table)) t.equal(name(v), k, `${k} = ${v}`)
  }
  const colour = namer({ RED: 1, GREEN: 2 }, 'colour')
  t.same([colour(1), colour(2), colour(3)], ['RED', 'GREEN', 'colour(3)'])
})
