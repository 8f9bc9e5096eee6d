<?xml version="1.0" encoding="UTF-8"?>
<!--
  ajatus2midgard.xsl: an Ajatus leaf (Atom entry carrying the CouchDB document in an XEP-0335 JSON
  container, or as XSLT 3.0 json-to-xml content) becomes a <midgard_object> with one
  midgard_article under a configured topic, for Midgard's importer (Hermod's inbound spool).

  Parameters:
    topic-guid  GUID of the Midgard topic the articles go under (required)
    item-guid   the article GUID; Hermod passes one derived from the document id (MD5 hex), so
                updates of the same document hit the same article
    partner, node, item-id, publisher   passed by Hermod
-->
<xsl:stylesheet version="3.0"
    xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:xs="http://www.w3.org/2001/XMLSchema"
    xmlns:fn="http://www.w3.org/2005/xpath-functions"
    xmlns:j="urn:xmpp:json:0"
    xmlns:h="urn:hermod:xsl"
    exclude-result-prefixes="#all">

  <xsl:param name="partner" as="xs:string" select="''"/>
  <xsl:param name="node" as="xs:string" select="''"/>
  <xsl:param name="item-id" as="xs:string" select="''"/>
  <xsl:param name="publisher" as="xs:string" select="''"/>
  <xsl:param name="topic-guid" as="xs:string" select="''"/>
  <xsl:param name="item-guid" as="xs:string" select="''"/>

  <!-- xs:dateTime lexical form to Midgard's "Y-m-d H:i:sO" in UTC; a zero date when unset. -->
  <xsl:function name="h:date" as="xs:string">
    <xsl:param name="d" as="item()?"/>
    <xsl:sequence select="if (not($d castable as xs:dateTime)) then '0000-00-00 00:00:00+0000'
      else format-dateTime(adjust-dateTime-to-timezone(xs:dateTime($d), xs:dayTimeDuration('PT0H')), '[Y0001]-[M01]-[D01] [H01]:[m01]:[s01]') || '+0000'"/>
  </xsl:function>

  <xsl:function name="h:val" as="item()?">
    <xsl:param name="m" as="map(*)?"/>
    <xsl:param name="key" as="xs:string"/>
    <xsl:sequence select="if (exists($m) and map:contains($m, $key)) then (if ($m($key) instance of map(*)) then $m($key)?val else $m($key)) else ()"
        xmlns:map="http://www.w3.org/2005/xpath-functions/map"/>
  </xsl:function>

  <xsl:template match="/">
    <xsl:if test="not($topic-guid)">
      <xsl:message terminate="yes">ajatus2midgard: the topic-guid parameter is required</xsl:message>
    </xsl:if>
    <xsl:variable name="doc" as="map(*)?" select="
        if (//j:json) then parse-json(string((//j:json)[1]))
        else if (//fn:map) then parse-json(xml-to-json((//fn:map)[1]))
        else ()"/>
    <xsl:if test="empty($doc)">
      <xsl:message terminate="yes">ajatus2midgard: the leaf carries no JSON document</xsl:message>
    </xsl:if>
    <xsl:variable name="v" select="$doc?value"/>
    <xsl:variable name="meta" select="$v?metadata"/>
    <xsl:variable name="deleted" select="$doc?_deleted = true() or h:val($meta, 'deleted') = true()"/>
    <xsl:variable name="guid" select="if ($item-guid) then $item-guid else translate(lower-case($doc?_id), '-', '')"/>
    <midgard_object xmlns="http://www.midgard-project.org/midgard_object/1.8">
      <midgard_article guid="{$guid}" purge="no" action="{if ($deleted) then 'deleted' else 'updated'}">
        <topic><xsl:value-of select="$topic-guid"/></topic>
        <name><xsl:value-of select="replace(lower-case(string($doc?_id)), '[^a-z0-9-]+', '-')"/></name>
        <title><xsl:value-of select="h:val($v, 'title')"/></title>
        <abstract><xsl:value-of select="string-join(h:val($v, 'tags')?*, ', ')"/></abstract>
        <content><xsl:value-of select="h:val($v, 'content')"/></content>
        <metadata>
          <created><xsl:value-of select="h:date(h:val($meta, 'created'))"/></created>
          <revised><xsl:value-of select="h:date(h:val($meta, 'revised'))"/></revised>
          <revision><xsl:value-of select="substring-before(string($doc?_rev), '-')"/></revision>
          <deleted><xsl:value-of select="if ($deleted) then 1 else 0"/></deleted>
        </metadata>
      </midgard_article>
    </midgard_object>
  </xsl:template>
</xsl:stylesheet>
