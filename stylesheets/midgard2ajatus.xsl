<?xml version="1.0" encoding="UTF-8"?>
<!--
  midgard2ajatus.xsl: a Midgard leaf (Atom entry whose content holds a <midgard_object>, or a bare
  <midgard_object>) becomes an Ajatus note, emitted as an XEP-0335 JSON container that Hermod's
  CouchDB sink writes. The note's _id is derived from the article GUID, so an update of the same
  article updates the same note.

  Parameters (Hermod passes partner, node, item-id, publisher; the rest come from the subscription):
    tags       comma-separated tags for the note (default: the node's last path segment, else "midgard")
    topic-name used as an extra tag when given (e.g. the name of the article's topic)
-->
<xsl:stylesheet version="3.0"
    xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:xs="http://www.w3.org/2001/XMLSchema"
    xmlns:atom="http://www.w3.org/2005/Atom"
    xmlns:mgd="http://www.midgard-project.org/midgard_object/1.8"
    xmlns:h="urn:hermod:xsl"
    exclude-result-prefixes="#all">

  <xsl:param name="partner" as="xs:string" select="''"/>
  <xsl:param name="node" as="xs:string" select="''"/>
  <xsl:param name="item-id" as="xs:string" select="''"/>
  <xsl:param name="publisher" as="xs:string" select="''"/>
  <xsl:param name="tags" as="xs:string" select="''"/>
  <xsl:param name="topic-name" as="xs:string" select="''"/>

  <!-- Midgard datetime "2026-11-24 13:00:00+0000" to xs:dateTime lexical form; "" for unset. -->
  <xsl:function name="h:date" as="xs:string">
    <xsl:param name="d" as="xs:string?"/>
    <xsl:sequence select="if (not($d) or starts-with($d, '0000')) then ''
      else replace(normalize-space($d), '^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})([+-]\d{2}):?(\d{2})$', '$1T$2$3:$4')"/>
  </xsl:function>

  <xsl:template match="/">
    <xsl:variable name="article" select="(//mgd:midgard_object/mgd:midgard_article)[1]"/>
    <xsl:if test="not($article)">
      <xsl:message terminate="yes">midgard2ajatus: the leaf carries no midgard_article</xsl:message>
    </xsl:if>
    <xsl:variable name="from-node" select="tokenize($node, '/')[last()][. != 'all' and . != 'approved']"/>
    <xsl:variable name="tag-list" select="distinct-values((
        if ($tags) then tokenize($tags, ',\s*') else if ($from-node) then $from-node else 'midgard',
        $topic-name[. != '']))"/>
    <xsl:variable name="m" select="$article/mgd:metadata"/>
    <xsl:variable name="doc" select="map {
        '_id': 'midgard-' || $article/@guid,
        'value': map {
          '_type': 'note',
          'title': map { 'val': string($article/mgd:title) },
          'content': map { 'val': string($article/mgd:content) },
          'abstract': map { 'val': string($article/mgd:abstract) },
          'tags': map { 'val': array { $tag-list } },
          'source': map { 'val': map { 'system': 'midgard', 'guid': string($article/@guid), 'partner': $partner, 'node': $node } },
          'metadata': map {
            'created': map { 'val': h:date($m/mgd:created) },
            'revised': map { 'val': h:date($m/mgd:revised) },
            'creator': map { 'val': string($m/mgd:creator) },
            'deleted': map { 'val': string($m/mgd:deleted) = '1' or $article/@action = ('deleted', 'purged') }
          }
        }
      }"/>
    <json xmlns="urn:xmpp:json:0"><xsl:value-of select="serialize($doc, map { 'method': 'json' })"/></json>
  </xsl:template>
</xsl:stylesheet>
